//! The client's request body on its way to a server: counted for the
//! access log and held to the frontend's `max_body` as it streams. (The
//! response body on its way back is `exchange`'s.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// Why a client's request body could not be passed on whole. hyper hands
/// it back as the source of the upstream request's error, so tether can
/// answer the client with its own status (400 or 413) rather than a 502.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// The body broke its framing (an invalid chunk size, a connection cut mid-body).
    #[error("the request body is malformed: {0}")]
    Malformed(#[source] hyper::Error),
    /// More bytes arrived than the frontend's `max_body` allows.
    #[error("the request body is larger than this frontend accepts ({limit} bytes)")]
    TooLarge {
        /// The frontend's `limits.max_body`.
        limit: u64,
    },
    /// No byte of the body arrived for the frontend's `timeouts.client_body`.
    #[error("the request body stalled: nothing arrived for {timeout:?}")]
    Stalled {
        /// The frontend's `timeouts.client_body`.
        timeout: Duration,
    },
    /// The server answered before the body ended: the rest is not sent and
    /// the server's connection is closed (it cannot frame another request).
    #[error("the server answered before the request body ended")]
    Abandoned,
}

/// An inactivity limit on a stream (HAProxy's `timeout client` / `timeout
/// server` semantics): expired once the stream waited on its peer for
/// `limit` without a byte. Counted only while tether waits on that peer
/// (not while the other side holds the stream back), and the timer is
/// armed only then, so a busy stream costs nothing per frame.
#[derive(Debug)]
pub struct Inactivity {
    limit: Duration,
    /// When the current wait began, if the stream is waiting.
    waiting_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Inactivity {
    /// A limit of `limit`.
    pub fn new(limit: Duration) -> Self {
        Self {
            limit,
            waiting_since: None,
            timer: None,
        }
    }

    /// The limit.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Bytes moved: the next wait counts afresh.
    pub fn moved(&mut self) {
        self.waiting_since = None;
    }

    /// The stream waits on its peer: ready once it has waited the whole
    /// limit; while pending, `cx` is woken when it may have expired.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        let deadline = since + self.limit;
        loop {
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            ready!(timer.as_mut().poll(cx));
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
        }
    }
}

/// How far a request body got, shared by the body (on the way to the
/// server) and the exchange (which decides whether the server's connection
/// may serve again).
#[derive(Debug, Default)]
pub struct BodyProgress {
    /// The whole body was handed to the server's connection.
    done: AtomicBool,
    /// The exchange ended before the body did: the body fails at once.
    abandoned: AtomicBool,
    /// The body's task, to wake when it is abandoned.
    waker: AtomicWaker,
}

impl BodyProgress {
    /// Whether the whole body was handed to the server's connection.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// The response ended before the body: make the body fail, so the
    /// server's connection closes instead of waiting for the client.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn finish(&self) {
        self.done.store(true, Ordering::Release);
    }
}

impl ClientBodyError {
    /// The client's fault behind an upstream request error, if that is what it was.
    pub fn behind<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e ClientBodyError> {
        let mut cause = error.source();
        while let Some(err) = cause {
            if let Some(found) = err.downcast_ref::<ClientBodyError>() {
                return Some(found);
            }
            cause = err.source();
        }
        None
    }
}

/// A client's request body streamed to the server, counted for the access
/// log and held to the frontend's `max_body` as it streams (a chunked body
/// declares no length up front).
#[derive(Debug)]
pub struct RequestBody {
    /// The client's body; `None` for a request tether sends again without one.
    inner: Option<Incoming>,
    received: Arc<AtomicU64>,
    /// `limits.max_body`, if any.
    limit: Option<u64>,
    /// How far the body got (shared with the exchange).
    progress: Arc<BodyProgress>,
    /// The frontend's `timeouts.client_body`, while waiting for the client.
    stall: Option<Inactivity>,
}

impl RequestBody {
    /// Wraps `inner`, adding each data frame's length to `received`,
    /// failing the body once it exceeds `limit` or once nothing arrived for
    /// `stall`, and reporting to `progress`.
    pub fn new(
        inner: Incoming,
        received: Arc<AtomicU64>,
        limit: Option<u64>,
        stall: Duration,
        progress: Arc<BodyProgress>,
    ) -> Self {
        if inner.is_end_stream() {
            progress.finish();
        }
        Self {
            inner: Some(inner),
            received,
            limit,
            progress,
            stall: Some(Inactivity::new(stall)),
        }
    }

    /// No body (a replayed WebSocket handshake).
    pub fn empty(received: Arc<AtomicU64>) -> Self {
        let progress = Arc::new(BodyProgress::default());
        progress.finish();
        Self {
            inner: None,
            received,
            limit: None,
            progress,
            stall: None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        this.progress.waker.register(cx.waker());
        if this.progress.abandoned.load(Ordering::Acquire) {
            return Poll::Ready(Some(Err(ClientBodyError::Abandoned)));
        }
        let frame = match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Pending => {
                if let Some(stall) = &mut this.stall {
                    ready!(stall.poll_expired(cx));
                    return Poll::Ready(Some(Err(ClientBodyError::Stalled { timeout: stall.limit() })));
                }
                return Poll::Pending;
            }
            Poll::Ready(None) => {
                this.progress.finish();
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(ClientBodyError::Malformed(err)))),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if let Some(stall) = &mut this.stall {
            stall.moved();
        }
        if inner.is_end_stream() {
            this.progress.finish();
        }
        if let Some(data) = frame.data_ref() {
            let total = this.received.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
            if let Some(limit) = this.limit.filter(|&limit| total > limit) {
                return Poll::Ready(Some(Err(ClientBodyError::TooLarge { limit })));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }
    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|inner| inner.is_end_stream())
    }
    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |inner| inner.size_hint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `inactivity` has expired now (polled once).
    async fn expired(inactivity: &mut Inactivity) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(inactivity.poll_expired(cx).is_ready())).await
    }

    #[tokio::test(start_paused = true)]
    async fn inactivity_counts_only_the_current_wait() {
        let mut stall = Inactivity::new(Duration::from_secs(60));
        // Time before the first wait (the peer was not waited on) does not count.
        tokio::time::advance(Duration::from_secs(120)).await;
        assert!(!expired(&mut stall).await, "the wait starts now");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!expired(&mut stall).await);
        stall.moved();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(!expired(&mut stall).await, "a byte moved: the next wait counts afresh");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!expired(&mut stall).await);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(expired(&mut stall).await, "sixty seconds of waiting without a byte");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_stream_is_woken_when_its_limit_passes() {
        let mut stall = Inactivity::new(Duration::from_millis(300));
        let started = Instant::now();
        std::future::poll_fn(|cx| stall.poll_expired(cx)).await;
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    #[test]
    fn abandoning_a_body_is_seen_by_its_progress() {
        let progress = BodyProgress::default();
        assert!(!progress.is_done());
        progress.abandon();
        assert!(progress.abandoned.load(Ordering::Acquire));
        progress.finish();
        assert!(progress.is_done());
    }
}
