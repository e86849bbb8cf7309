//! The spans of the data path: one per HTTP request or WebSocket handshake
//! (kind SERVER, OTel HTTP semantic conventions plus `tether.*`), continuing
//! the client's W3C trace, and one per tunnel, a child of its handshake's
//! span covering the tunnel's life, made when the tunnel ends.

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};

use super::traceparent::{self, TRACEPARENT, TRACESTATE};

/// Starts the spans of one tether instance (cheap to clone).
#[derive(Clone, Debug)]
pub struct Tracer {
    inner: SdkTracer,
}

/// What a request's span says from its start.
pub struct RequestStart<'a> {
    /// The request's headers: `traceparent` and `tracestate` are read from them.
    pub headers: &'a HeaderMap,
    /// The request method.
    pub method: &'a http::Method,
    /// The path (without the query, which may carry session ids).
    pub path: &'a str,
    /// The host the request is for (`Host`, without the port).
    pub host: Option<&'a str>,
    /// The client connection is TLS.
    pub https: bool,
    /// The client speaks HTTP/2.
    pub http2: bool,
    /// The client's address.
    pub client: SocketAddr,
    /// The frontend's name.
    pub frontend: &'a str,
    /// tether's request id (as the access log writes it).
    pub request_id: &'a dyn Display,
}

/// What a request's span says at its end.
pub struct RequestEnd<'a> {
    /// The status sent to the client (0: none was).
    pub status: u16,
    /// The backend chosen, if one was.
    pub backend: Option<&'a str>,
    /// The server chosen, if one was.
    pub server: Option<&'a str>,
    /// Connect failures and resends before the answer.
    pub retries: u32,
    /// Why the exchange failed or ended early, if it did.
    pub error: Option<&'a str>,
}

impl Tracer {
    /// Wraps the SDK's tracer.
    pub(super) fn new(inner: SdkTracer) -> Self {
        Self { inner }
    }

    /// Starts the span of a request: a child of the client's span when its
    /// `traceparent` is valid, else the root of a new trace (a malformed
    /// one is ignored, W3C Trace Context §3.2.2).
    pub fn request(&self, start: RequestStart<'_>) -> RequestSpan {
        let parent = start
            .headers
            .get(TRACEPARENT)
            .and_then(|value| traceparent::parse(value.as_bytes()));
        let context = match parent {
            Some(parent) => {
                let state = start
                    .headers
                    .get(TRACESTATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<TraceState>().ok())
                    .unwrap_or_default();
                Context::new().with_remote_span_context(SpanContext::new(
                    parent.trace_id,
                    parent.parent_id,
                    parent.flags,
                    true,
                    state,
                ))
            }
            None => Context::new(),
        };
        let mut attributes = Vec::with_capacity(10);
        attributes.push(KeyValue::new("http.request.method", start.method.as_str().to_string()));
        attributes.push(KeyValue::new("url.path", start.path.to_string()));
        attributes.push(KeyValue::new("url.scheme", if start.https { "https" } else { "http" }));
        attributes.push(KeyValue::new(
            "network.protocol.version",
            if start.http2 { "2" } else { "1.1" },
        ));
        attributes.push(KeyValue::new("client.address", start.client.ip().to_string()));
        attributes.push(KeyValue::new("client.port", i64::from(start.client.port())));
        if let Some(host) = start.host {
            attributes.push(KeyValue::new("server.address", host.to_string()));
        }
        attributes.push(KeyValue::new("tether.frontend", start.frontend.to_string()));
        attributes.push(KeyValue::new("tether.request_id", start.request_id.to_string()));
        let span = self
            .inner
            .span_builder(start.method.as_str().to_string())
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.inner, &context);
        RequestSpan {
            span,
            tracer: self.clone(),
            continued: parent.is_some(),
            route: None,
            websocket: false,
        }
    }
}

/// The span of one request or handshake, until its exchange ends.
pub struct RequestSpan {
    span: Span,
    tracer: Tracer,
    /// The client's trace is continued (so its `tracestate` goes on to the server).
    continued: bool,
    /// The routing rule that matched (its index in the frontend), `None` for the default backend.
    route: Option<usize>,
    /// The request is a WebSocket handshake.
    websocket: bool,
}

impl std::fmt::Debug for RequestSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSpan")
            .field("context", self.span.span_context())
            .finish_non_exhaustive()
    }
}

impl RequestSpan {
    /// The trace the request belongs to (`None` once the pipeline was shut down).
    pub fn trace_id(&self) -> Option<TraceId> {
        let context = self.span.span_context();
        context.is_valid().then(|| context.trace_id())
    }

    /// Makes the server's request continue this span's trace: its
    /// `traceparent` names this span (replacing the client's); the client's
    /// `tracestate` goes on only with the client's trace (W3C Trace Context §3.3).
    pub fn propagate(&self, headers: &mut HeaderMap) {
        let context = self.span.span_context();
        if !self.continued {
            headers.remove(TRACESTATE);
        }
        if !context.is_valid() {
            headers.remove(TRACEPARENT);
            return;
        }
        let value = traceparent::format(context.trace_id(), context.span_id(), context.trace_flags());
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(TRACEPARENT, value);
        }
    }

    /// Records the routing rule that matched (its index), or none (the default backend).
    pub fn set_route(&mut self, route: Option<usize>) {
        self.route = route;
    }

    /// Records that the request is a WebSocket handshake.
    pub fn set_websocket(&mut self) {
        self.websocket = true;
    }

    /// The trace of the tunnel this handshake opens: its span is this one's child.
    pub fn tunnel(&self) -> TunnelTrace {
        let context = self.span.span_context();
        TunnelTrace {
            tracer: self.tracer.clone(),
            parent: SpanContext::new(
                context.trace_id(),
                context.span_id(),
                context.trace_flags(),
                false,
                context.trace_state().clone(),
            ),
        }
    }

    /// Ends the span with what the exchange came to. A 5xx, a failure, or
    /// no response at all set the span's status to error (OTel HTTP server
    /// conventions: a 4xx is the client's, not an error of this span).
    pub fn end(mut self, end: RequestEnd<'_>) {
        if !self.span.is_recording() {
            return;
        }
        let mut attributes = Vec::with_capacity(7);
        if end.status != 0 {
            attributes.push(KeyValue::new("http.response.status_code", i64::from(end.status)));
        }
        attributes.push(KeyValue::new(
            "tether.route",
            self.route.map_or_else(|| "default".to_string(), |i| i.to_string()),
        ));
        if let Some(backend) = end.backend {
            attributes.push(KeyValue::new("tether.backend", backend.to_string()));
        }
        if let Some(server) = end.server {
            attributes.push(KeyValue::new("tether.server", server.to_string()));
        }
        attributes.push(KeyValue::new("tether.retries", i64::from(end.retries)));
        attributes.push(KeyValue::new("tether.websocket", self.websocket));
        if let Some(error) = end.error {
            attributes.push(KeyValue::new("error.type", error.to_string()));
        }
        self.span.set_attributes(attributes);
        match (end.error, end.status) {
            (Some(error), _) => self.span.set_status(Status::error(error.to_string())),
            (None, 0) => self.span.set_status(Status::error("no response was sent")),
            (None, status) if status >= 500 => self.span.set_status(Status::error(format!("status {status}"))),
            _ => {}
        }
        self.span.end();
    }
}

/// What a tunnel's span says: bytes, messages and close codes each way.
pub struct TunnelSummary<'a> {
    /// How long the tunnel was open.
    pub duration: Duration,
    /// The server it was open to.
    pub server: &'a str,
    /// Bytes from the client to the server.
    pub bytes_in: u64,
    /// Bytes from the server to the client.
    pub bytes_out: u64,
    /// WebSocket messages from the client.
    pub messages_in: u64,
    /// WebSocket messages to the client.
    pub messages_out: u64,
    /// The code of the Close frame the client sent, if any.
    pub close_code_in: Option<u16>,
    /// The code of the Close frame the client received, if any.
    pub close_code_out: Option<u16>,
    /// Why it ended, as the access log says it.
    pub close: &'a dyn Display,
    /// It ended on an I/O error of either side.
    pub failed: bool,
}

/// The trace of an open tunnel: enough to make its span when it ends
/// (one pointer in the tunnel's task when boxed; no SDK span held for hours).
#[derive(Debug)]
pub struct TunnelTrace {
    tracer: Tracer,
    /// The handshake's span.
    parent: SpanContext,
}

impl TunnelTrace {
    /// The trace the tunnel belongs to (`None` once the pipeline was shut down).
    pub fn trace_id(&self) -> Option<TraceId> {
        self.parent.is_valid().then(|| self.parent.trace_id())
    }

    /// Exports the tunnel's span, `WebSocket tunnel`, from its opening
    /// (`summary.duration` ago) to now, as a child of the handshake's span.
    pub fn end(self, summary: TunnelSummary<'_>) {
        if !self.parent.is_valid() || !self.parent.is_sampled() {
            return;
        }
        let now = SystemTime::now();
        let mut attributes = vec![
            KeyValue::new("tether.server", summary.server.to_string()),
            KeyValue::new("tether.tunnel.bytes_in", saturating_i64(summary.bytes_in)),
            KeyValue::new("tether.tunnel.bytes_out", saturating_i64(summary.bytes_out)),
            KeyValue::new("tether.tunnel.messages_in", saturating_i64(summary.messages_in)),
            KeyValue::new("tether.tunnel.messages_out", saturating_i64(summary.messages_out)),
            KeyValue::new("tether.tunnel.close", summary.close.to_string()),
        ];
        if let Some(code) = summary.close_code_in {
            attributes.push(KeyValue::new("tether.tunnel.close_code_in", i64::from(code)));
        }
        if let Some(code) = summary.close_code_out {
            attributes.push(KeyValue::new("tether.tunnel.close_code_out", i64::from(code)));
        }
        let tracer = &self.tracer.inner;
        let mut span = tracer
            .span_builder("WebSocket tunnel")
            .with_kind(SpanKind::Internal)
            .with_start_time(now.checked_sub(summary.duration).unwrap_or(now))
            .with_attributes(attributes)
            .start_with_context(tracer, &Context::new().with_remote_span_context(self.parent));
        if summary.failed {
            span.set_status(Status::error(summary.close.to_string()));
        }
        span.end_with_timestamp(now);
    }
}

/// An OTLP integer attribute (signed 64-bit) of a count.
fn saturating_i64(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
