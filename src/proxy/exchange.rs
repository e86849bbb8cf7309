//! One request's exchange with a server: what to settle when the response
//! has been sent (slot, pool, counters, access log), and the response body
//! streamed to the client (a server's, or one tether made).

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::conn::ConnActivity;
use super::log::HttpLog;
use super::pool::{Pool, UpstreamSender};
use crate::state::{ActiveGuard, ServerState};
use crate::sticky::SidLearner;

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
        }
    }

    /// The response body ended cleanly: the upstream connection may serve again.
    fn completed(&mut self) {
        if let Some((sender, pool)) = self.keep_alive.take() {
            pool.put(sender);
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
        if let Some(state) = &self.server_state {
            state.count_response(self.log.status);
            let bytes_in = self.log.bytes_in.load(Ordering::Relaxed);
            state.traffic.add(bytes_in, self.log.bytes_out, 0, 0);
        }
        self.log.emit();
    }
}

enum Source {
    Upstream(Incoming),
    Local(Option<Bytes>),
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
    /// A body streamed from the server.
    pub fn upstream(inner: Incoming, exchange: Box<Exchange>) -> Self {
        Self {
            source: Source::Upstream(inner),
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
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = match &mut this.source {
            Source::Local(bytes) => bytes.take().map(|b| Ok(Frame::data(b))),
            Source::Upstream(inner) => ready!(Pin::new(inner).poll_frame(cx)),
        };
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.observe(data);
                }
            }
            Some(Err(_)) => {
                if let Some(exchange) = &mut this.exchange {
                    exchange.log.error = Some("server aborted the response body".to_string());
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
            Source::Upstream(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Local(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Source::Upstream(inner) => inner.size_hint(),
        }
    }
}
