//! The client's request body on its way to a server: counted for the
//! access log and held to the frontend's `max_body` as it streams. (The
//! response body on its way back is `exchange`'s.)

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

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
}

impl RequestBody {
    /// Wraps `inner`, adding each data frame's length to `received` and
    /// failing the body once it exceeds `limit`.
    pub fn new(inner: Incoming, received: Arc<AtomicU64>, limit: Option<u64>) -> Self {
        Self {
            inner: Some(inner),
            received,
            limit,
        }
    }

    /// No body (a replayed WebSocket handshake).
    pub fn empty(received: Arc<AtomicU64>) -> Self {
        Self {
            inner: None,
            received,
            limit: None,
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
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match ready!(Pin::new(inner).poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(err)) => return Poll::Ready(Some(Err(ClientBodyError::Malformed(err)))),
            Some(Ok(frame)) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let total = self.received.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
            if let Some(limit) = self.limit.filter(|&limit| total > limit) {
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
