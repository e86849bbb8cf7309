//! One request's exchange with a server: what to settle when the response
//! has been sent (slot, pool, counters, access log), and the response body
//! streamed to the client (a server's, or one tether made).

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::body::{BodyProgress, Inactivity};
use super::conn::ConnActivity;
use super::log::HttpLog;
use super::pool::{Pool, UpstreamSender};
use crate::state::{ActiveGuard, ServerState};
use crate::sticky::SidLearner;
use crate::telemetry::{RequestSpan, TraceId};

/// Everything to settle when a response has been sent (or abandoned).
#[derive(Debug)]
pub struct Exchange {
    /// The access-log line, filled in as the request progresses.
    pub log: HttpLog,
    /// The client connection's phase tracker.
    pub activity: Arc<ConnActivity>,
    /// The server slot this request holds.
    pub guard: Option<ActiveGuard>,
    /// The upstream connection and its server's pool, where it goes back
    /// if the body ends cleanly.
    pub keep_alive: Option<(UpstreamSender, Arc<Pool>)>,
    /// The connection became a tunnel: it will not take another request.
    pub upgraded: bool,
    /// Learns a session id from the body as it streams (Engine.IO handshakes).
    pub learner: Option<SidLearner>,
    /// The server chosen, once known: its response and byte counters move when the exchange ends.
    pub server_state: Option<Arc<ServerState>>,
    /// How far the request body got: a connection whose server answered
    /// before the body ended is not pooled (nor left waiting for the rest).
    pub request_progress: Option<Arc<BodyProgress>>,
    /// The request's span (`[tracing]`), ended with the exchange; boxed so
    /// an exchange without tracing carries one pointer.
    pub trace: Option<Box<RequestSpan>>,
    /// Connect failures and resends before the server answered.
    pub retries: u32,
}

impl Exchange {
    /// A new exchange for the request described by `log`.
    pub fn new(log: HttpLog, activity: Arc<ConnActivity>) -> Self {
        Self {
            log,
            activity,
            guard: None,
            keep_alive: None,
            upgraded: false,
            learner: None,
            server_state: None,
            request_progress: None,
            trace: None,
            retries: 0,
        }
    }

    /// The trace the request belongs to, when `[tracing]` is on (for the access log).
    pub fn trace_id(&self) -> Option<TraceId> {
        self.trace.as_ref().and_then(|span| span.trace_id())
    }

    /// The response body ended cleanly: the upstream connection may serve
    /// again if the request body was all sent; if it was not, the server
    /// answered early, and its connection is closed instead.
    fn completed(&mut self) {
        if let Some((sender, pool)) = self.keep_alive.take() {
            match &self.request_progress {
                Some(progress) if !progress.is_done() => {
                    tracing::debug!(
                        request_id = %self.log.request_id,
                        "the server answered before the request body ended: its connection is closed"
                    );
                    progress.abandon();
                    drop(sender);
                }
                _ => pool.put(sender),
            }
        }
        self.guard = None;
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if self.upgraded {
            self.activity.upgraded();
        } else {
            self.activity.request_finished();
        }
        if let Some(progress) = self.request_progress.as_ref().filter(|p| !p.is_done()) {
            // The response was abandoned mid-way (client gone, timeout):
            // the server's connection does not wait for the rest of the body.
            progress.abandon();
        }
        if self.log.error.is_none() && self.activity.was_cut_for_not_reading() {
            self.log.error = Some("the client stopped reading the response: both connections closed".to_string());
        }
        if let Some(state) = &self.server_state {
            state.count_response(self.log.status);
            let bytes_in = self.log.bytes_in.load(Ordering::Relaxed);
            state.traffic.add(bytes_in, self.log.bytes_out, 0, 0);
        }
        self.log.trace_id = self.trace_id().map(super::trace::trace_id_number);
        self.log.emit();
        if let Some(span) = self.trace.take() {
            super::trace::finish(span, &self.log, self.retries);
        }
    }
}

enum Source {
    /// A server's body, with the backend's `server_body` limit on waiting for it.
    Upstream(Incoming, Inactivity),
    Local(Option<Bytes>),
}

/// Why a response body stopped before its end; the client connection is
/// closed (the client sees a cut-off body).
#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    /// The server broke its response off.
    #[error("server aborted the response body: {0}")]
    Server(#[source] hyper::Error),
    /// The server sent no byte for the backend's `timeouts.server_body`.
    #[error("the server sent nothing of the response body for {0:?}")]
    Stalled(Duration),
}

/// A response body to the client: streamed from a server or made by tether.
pub struct ResponseBody {
    source: Source,
    exchange: Option<Box<Exchange>>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl ResponseBody {
    /// A body streamed from the server, which may keep the client waiting
    /// at most `stall` between bytes.
    pub fn upstream(inner: Incoming, stall: Duration, exchange: Box<Exchange>) -> Self {
        Self {
            source: Source::Upstream(inner, Inactivity::new(stall)),
            exchange: Some(exchange),
        }
    }

    /// A body tether wrote itself (errors, empty 101).
    pub fn local(bytes: Bytes, exchange: Box<Exchange>) -> Self {
        Self {
            source: Source::Local((!bytes.is_empty()).then_some(bytes)),
            exchange: Some(exchange),
        }
    }

    fn observe(&mut self, data: &[u8]) {
        if let Some(exchange) = &mut self.exchange {
            exchange.log.bytes_out += data.len() as u64;
            if let Some(learner) = &mut exchange.learner {
                learner.feed(data);
            }
        }
    }

    fn finish(&mut self) {
        if let Some(exchange) = &mut self.exchange {
            exchange.completed();
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper never polls a body that is empty from the start (204, `Content-Length: 0`).
        if self.is_end_stream() {
            self.finish();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        let this = &mut *self;
        let frame = match &mut this.source {
            Source::Local(bytes) => bytes.take().map(|b| Ok(Frame::data(b))),
            Source::Upstream(inner, stall) => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(frame) => {
                    stall.moved();
                    frame.map(|f| f.map_err(ResponseBodyError::Server))
                }
                Poll::Pending => {
                    ready!(stall.poll_expired(cx));
                    Some(Err(ResponseBodyError::Stalled(stall.limit())))
                }
            },
        };
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.observe(data);
                }
            }
            Some(Err(err)) => {
                if let Some(exchange) = &mut this.exchange {
                    if matches!(err, ResponseBodyError::Stalled(_)) {
                        tracing::info!(
                            request_id = %exchange.log.request_id,
                            server = exchange.log.server.as_deref().unwrap_or("-"),
                            "{err}: both connections closed"
                        );
                    }
                    exchange.log.error = Some(err.to_string());
                    exchange.keep_alive = None;
                }
            }
            None => this.finish(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Local(bytes) => bytes.is_none(),
            Source::Upstream(inner, _) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Local(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Source::Upstream(inner, _) => inner.size_hint(),
        }
    }
}
