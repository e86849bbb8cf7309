//! Client connection timing: which phase a keep-alive connection is in
//! (idle, reading a head, busy) and since when, so one watchdog per
//! connection can apply the `client` and `http_request` timeouts.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::framing::HeadScanner;

/// What a client connection is doing, which decides its timeout. Stored
/// as a `u8` in an atomic (read on every client read), hence `repr(u8)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Waiting for the next request (the `client` timeout applies).
    Idle = 0,
    /// The first bytes of a request head arrived (the `http_request` timeout applies).
    Head = 1,
    /// A request is being served, or the connection became a tunnel: no client timeout.
    Busy = 2,
}

impl Phase {
    /// The phase stored as `value`; anything unknown reads as `Busy`, the
    /// phase without a client timeout.
    pub fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Idle,
            1 => Self::Head,
            _ => Self::Busy,
        }
    }
}

/// The phase of one client connection and when it began.
#[derive(Debug)]
pub struct ConnActivity {
    /// A [`Phase`] as its `u8`.
    phase: AtomicU8,
    /// Milliseconds after `epoch` when the phase began.
    since_ms: AtomicU64,
    /// When the connection was accepted.
    epoch: Instant,
    /// Wakes the watchdog when its deadline changes kind: a head starts
    /// (`http_request` is usually shorter than the idle deadline it sleeps
    /// towards) or a response ends (a busy connection had no deadline).
    phase_changed: Notify,
    /// Requests in flight (pipelining keeps it at most one in practice).
    in_flight: AtomicU64,
    /// Requests received so far.
    served: AtomicU64,
    /// The head just read named both `Content-Length` and `Transfer-Encoding`.
    framing_conflict: AtomicBool,
}

impl Default for ConnActivity {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnActivity {
    /// A connection that just opened: idle since now.
    pub fn new() -> Self {
        Self {
            phase: AtomicU8::new(Phase::Idle as u8),
            since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            phase_changed: Notify::new(),
            in_flight: AtomicU64::new(0),
            served: AtomicU64::new(0),
            framing_conflict: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn enter(&self, phase: Phase) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Bytes arrived from the client.
    fn on_read(&self) {
        if Phase::from_u8(self.phase.load(Ordering::Relaxed)) == Phase::Idle
            && self
                .phase
                .compare_exchange(
                    Phase::Idle as u8,
                    Phase::Head as u8,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.since_ms.store(self.now_ms(), Ordering::Relaxed);
            self.phase_changed.notify_one();
        }
    }

    /// Whether the request head just read named both `Content-Length` and
    /// `Transfer-Encoding` (hyper would have dropped the first); clears the flag.
    pub fn take_framing_conflict(&self) -> bool {
        self.framing_conflict.swap(false, Ordering::Relaxed)
    }

    /// A request head was parsed and is being served.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.fetch_add(1, Ordering::Relaxed);
        self.enter(Phase::Busy);
    }

    /// A response was fully sent; the connection waits for the next request.
    pub fn request_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.enter(Phase::Idle);
            self.phase_changed.notify_one();
        }
    }

    /// The connection became a tunnel: client timeouts no longer apply.
    pub fn upgraded(&self) {
        self.enter(Phase::Busy);
    }

    /// When the connection should be closed if nothing changes, and whether
    /// that would cut a half-received head (`true`) or an idle connection.
    pub fn deadline(&self, client: Duration, http_request: Duration) -> Option<(Instant, bool)> {
        let since = self.epoch + Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
        match self.phase() {
            Phase::Idle => Some((since + client, false)),
            Phase::Head => Some((since + http_request, true)),
            Phase::Busy => None,
        }
    }

    /// Whether a graceful stop may close this connection now: it has served
    /// a request and is between requests. A busy connection finishes first
    /// (hyper would otherwise mark its response `Connection: close`, which
    /// breaks a WebSocket 101). A connection that was just accepted and has
    /// not yet sent its first request is given a moment (`fresh_may_stop`),
    /// so a client that connected right before the stop is answered.
    pub fn may_stop_now(&self) -> bool {
        self.phase() == Phase::Idle && self.served.load(Ordering::Relaxed) > 0
    }

    /// Whether a request is being served (or the connection became a tunnel).
    pub fn is_busy(&self) -> bool {
        self.phase() == Phase::Busy
    }

    /// Resolves when the deadline may have changed kind.
    pub async fn phase_changed(&self) {
        self.phase_changed.notified().await
    }
}

/// The client socket, reporting reads to its `ConnActivity` and following
/// request heads for framing conflicts.
#[derive(Debug)]
pub struct WatchedIo<T> {
    inner: T,
    activity: std::sync::Arc<ConnActivity>,
    scanner: HeadScanner,
}

impl<T> WatchedIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, activity: std::sync::Arc<ConnActivity>) -> Self {
        Self {
            inner,
            activity,
            scanner: HeadScanner::default(),
        }
    }

    /// The socket, once the connection became a tunnel.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            let this = &mut *self;
            match this.activity.phase() {
                Phase::Busy => {}
                phase => {
                    if phase == Phase::Idle && this.scanner.finished() {
                        this.scanner.reset();
                    }
                    if this.scanner.scan(read) == Some(true) {
                        this.activity.framing_conflict.store(true, Ordering::Relaxed);
                    }
                }
            }
            this.activity.on_read();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_pick_their_timeout() {
        let activity = ConnActivity::new();
        let (client, head) = (Duration::from_secs(30), Duration::from_secs(10));
        let (_, cuts_head) = activity.deadline(client, head).unwrap();
        assert!(!cuts_head);
        activity.on_read();
        assert!(activity.deadline(client, head).unwrap().1);
        activity.request_started();
        assert!(activity.deadline(client, head).is_none());
        activity.request_finished();
        assert!(!activity.deadline(client, head).unwrap().1);
        activity.upgraded();
        assert!(activity.deadline(client, head).is_none());
    }

    #[test]
    fn phases_read_back_as_stored() {
        for phase in [Phase::Idle, Phase::Head, Phase::Busy] {
            assert_eq!(Phase::from_u8(phase as u8), phase);
        }
        assert_eq!(Phase::from_u8(7), Phase::Busy, "an unknown value has no client timeout");
    }

    #[test]
    fn a_connection_walks_idle_head_busy_idle() {
        let activity = ConnActivity::new();
        assert_eq!(activity.phase(), Phase::Idle);
        activity.on_read();
        assert_eq!(activity.phase(), Phase::Head);
        activity.on_read();
        assert_eq!(activity.phase(), Phase::Head, "more bytes of the head keep its start");
        activity.request_started();
        assert_eq!(activity.phase(), Phase::Busy);
        activity.request_finished();
        assert_eq!(activity.phase(), Phase::Idle);
    }
}
