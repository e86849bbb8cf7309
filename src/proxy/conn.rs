//! Client connection timing: which phase a keep-alive connection is in
//! (idle, reading a head, busy) and since when, and since when a response
//! has been waiting for the client to read it, so one watchdog per
//! connection can apply the `client`, `http_request` and `client_body` timeouts.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::framing::RequestScanner;
use super::wakes::Wakes;

/// What a client connection is doing, which decides its timeout. Stored
/// as a `u8` in an atomic (read on every client read), hence `repr(u8)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Waiting for the next request (the `client` timeout applies).
    Idle = 0,
    /// The first bytes of a request head arrived (the `http_request` timeout applies).
    Head = 1,
    /// A request is being served, or the connection became a tunnel: no
    /// client timeout, except `client_body` while a write waits for the client to read.
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

/// A connection's client timeouts (its frontend's when it was accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// `timeouts.client`: idle between requests.
    pub client: Duration,
    /// `timeouts.http_request`: a head arriving.
    pub http_request: Duration,
    /// `timeouts.client_body`: a client that neither sends nor reads while a request is under way.
    pub client_body: Duration,
}

impl Default for ClientTimeouts {
    /// The defaults of docs/config.md (30 s, 10 s, 60 s).
    fn default() -> Self {
        Self {
            client: Duration::from_secs(30),
            http_request: Duration::from_secs(10),
            client_body: Duration::from_secs(60),
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
    /// The timeouts the phases pick from.
    timeouts: ClientTimeouts,
    /// The connection task's two wake-ups (connection, watchdog).
    wakes: Wakes,
    /// Milliseconds after `epoch` of the watchdog's armed timer: a phase
    /// change whose deadline comes before it wakes the watchdog, a later
    /// one is found when the timer fires. `u64::MAX`: no timer, or the
    /// watchdog wants every change (a graceful stop is waiting).
    wake_before_ms: AtomicU64,
    /// Requests in flight (pipelining keeps it at most one in practice).
    in_flight: AtomicU64,
    /// Requests received so far.
    served: AtomicU64,
    /// The watchdog closed the connection because the client stopped
    /// reading its response (for the exchange's access line).
    not_reading: std::sync::atomic::AtomicBool,
    /// Milliseconds after `epoch` (plus one; 0: not blocked) since which a
    /// write to the client has been waiting for it to read.
    write_blocked_ms: AtomicU64,
    /// The place (0 = first) of the first request whose head named both
    /// `Content-Length` and `Transfer-Encoding`; `u64::MAX` while none did.
    framing_conflict: AtomicU64,
    /// HTTP/2 streams the client reset before their response head.
    cancelled: AtomicU64,
    /// The client reset too many of its streams: the watchdog ends the
    /// connection with GOAWAY.
    resets_abusive: std::sync::atomic::AtomicBool,
}

/// A connection whose client reset at least this many streams before their
/// response, and more than half of all it opened, is ended with GOAWAY:
/// the "rapid reset" attack (CVE-2023-44487) paced so that tether accepts
/// each stream before its reset (h2 itself counts only the streams reset
/// before they were accepted). A browser cancels a few requests when the
/// user navigates away, not hundreds, nor most of them.
pub const HTTP2_MAX_CANCELLED_STREAMS: u64 = 100;

impl Default for ConnActivity {
    fn default() -> Self {
        Self::new(ClientTimeouts::default())
    }
}

impl ConnActivity {
    /// A connection that just opened under `timeouts`: idle since now.
    pub fn new(timeouts: ClientTimeouts) -> Self {
        Self {
            phase: AtomicU8::new(Phase::Idle as u8),
            since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            timeouts,
            wakes: Wakes::default(),
            wake_before_ms: AtomicU64::new(u64::MAX),
            in_flight: AtomicU64::new(0),
            served: AtomicU64::new(0),
            framing_conflict: AtomicU64::new(u64::MAX),
            cancelled: AtomicU64::new(0),
            resets_abusive: std::sync::atomic::AtomicBool::new(false),
            write_blocked_ms: AtomicU64::new(0),
            not_reading: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn enter(&self, phase: Phase) -> u64 {
        let now = self.now_ms();
        self.since_ms.store(now, Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Release);
        now
    }

    /// The deadline is now `deadline_ms` after `epoch`: the watchdog is
    /// woken if its timer would fire too late for it.
    fn deadline_moved_to(&self, deadline_ms: u64) {
        if deadline_ms < self.wake_before_ms.load(Ordering::Acquire) {
            self.wakes.wake_watchdog();
        }
    }

    /// The watchdog's timer fires at `at` (`None`: no timer, or every
    /// phase change should wake it); see `wake_before_ms`.
    pub fn watchdog_armed(&self, at: Option<Instant>) {
        let ms = at.map_or(u64::MAX, |at| {
            at.saturating_duration_since(self.epoch).as_millis() as u64
        });
        self.wake_before_ms.store(ms, Ordering::Release);
    }

    /// The timeouts the phases pick from.
    pub fn timeouts(&self) -> ClientTimeouts {
        self.timeouts
    }

    /// The connection task's two wake-ups.
    pub fn wakes(&self) -> &Wakes {
        &self.wakes
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
            let now = self.now_ms();
            self.since_ms.store(now, Ordering::Relaxed);
            self.deadline_moved_to(now.saturating_add(self.timeouts.http_request.as_millis() as u64));
        }
    }

    /// Whether the head of request number `index` on this connection (0 =
    /// first, as `request_started` returns) named both `Content-Length` and
    /// `Transfer-Encoding` (hyper would have dropped the first). Every head
    /// was scanned by the time hyper hands its request over.
    pub fn framing_conflict_in(&self, index: u64) -> bool {
        self.framing_conflict.load(Ordering::Acquire) == index
    }

    /// An HTTP/2 stream was reset by the client before its response head:
    /// past [`HTTP2_MAX_CANCELLED_STREAMS`], and more than half of the
    /// streams, the connection is flagged (`resets_too_many`) and its watchdog woken.
    pub fn stream_cancelled(&self) {
        let cancelled = self.cancelled.fetch_add(1, Ordering::AcqRel) + 1;
        if is_reset_flood(cancelled, self.served.load(Ordering::Relaxed))
            && !self.resets_abusive.swap(true, Ordering::AcqRel)
        {
            self.wakes.wake_watchdog();
        }
    }

    /// Whether the client reset too many streams (see `stream_cancelled`).
    pub fn resets_too_many(&self) -> bool {
        self.resets_abusive.load(Ordering::Acquire)
    }

    /// A request head was parsed and is being served; returns its place on
    /// the connection (0 = first).
    pub fn request_started(&self) -> u64 {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let index = self.served.fetch_add(1, Ordering::Relaxed);
        // Busy has no deadline: the watchdog need not know at once.
        self.enter(Phase::Busy);
        index
    }

    /// A response was fully sent; the connection waits for the next request.
    pub fn request_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let now = self.enter(Phase::Idle);
            self.deadline_moved_to(now.saturating_add(self.timeouts.client.as_millis() as u64));
        }
    }

    /// The connection became a tunnel: client timeouts no longer apply.
    pub fn upgraded(&self) {
        self.enter(Phase::Busy);
    }

    /// An HTTP/2 stream became a tunnel: the connection counts it in
    /// flight (so it is never idle under it) until the hold drops.
    pub fn hold_stream(self: &std::sync::Arc<Self>) -> StreamHold {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.enter(Phase::Busy);
        StreamHold(self.clone())
    }

    /// A write to the client could not proceed (its receive window is full).
    fn write_blocked(&self) {
        if self.write_blocked_ms.load(Ordering::Relaxed) != 0 {
            return;
        }
        let now = self.now_ms();
        if self
            .write_blocked_ms
            .compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            // The watchdog of a busy connection may sleep without a deadline.
            self.deadline_moved_to(now.saturating_add(self.timeouts.client_body.as_millis() as u64));
        }
    }

    /// The watchdog is closing the connection: the client read nothing of
    /// its response for `client_body`.
    pub fn cut_for_not_reading(&self) {
        self.not_reading.store(true, Ordering::Release);
    }

    /// Whether the connection was cut because the client stopped reading.
    pub fn was_cut_for_not_reading(&self) -> bool {
        self.not_reading.load(Ordering::Acquire)
    }

    /// A write to the client went through.
    fn write_moved(&self) {
        if self.write_blocked_ms.load(Ordering::Relaxed) != 0 {
            self.write_blocked_ms.store(0, Ordering::Relaxed);
        }
    }

    /// When the connection should be closed if nothing changes, and why:
    /// idle between requests (`client`), a head arriving too slowly
    /// (`http_request`), or a busy connection whose client has not read
    /// what tether is writing for `client_body`.
    pub fn deadline(&self) -> Option<(Instant, Expiry)> {
        let ClientTimeouts {
            client,
            http_request,
            client_body,
        } = self.timeouts;
        let since = self.epoch + Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
        match self.phase() {
            Phase::Idle => Some((since + client, Expiry::Idle)),
            Phase::Head => Some((since + http_request, Expiry::Head)),
            Phase::Busy => match self.write_blocked_ms.load(Ordering::Relaxed) {
                0 => None,
                blocked => Some((
                    self.epoch + Duration::from_millis(blocked - 1) + client_body,
                    Expiry::NotReading,
                )),
            },
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
}

/// Waking a connection's activity wakes its watchdog (the waker its timer
/// and stop signals are polled with; see `wakes`).
impl std::task::Wake for ConnActivity {
    fn wake(self: std::sync::Arc<Self>) {
        self.wakes.wake_watchdog();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.wakes.wake_watchdog();
    }
}

/// The waker a connection's HTTP connection future is polled with.
#[derive(Debug)]
pub struct ConnectionWake(pub std::sync::Arc<ConnActivity>);

impl std::task::Wake for ConnectionWake {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.wakes.wake_connection();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.wakes.wake_connection();
    }
}

/// One tunnel on an HTTP/2 stream, counted in flight on its connection
/// until dropped (see [`ConnActivity::hold_stream`]).
#[derive(Debug)]
pub struct StreamHold(std::sync::Arc<ConnActivity>);

impl Drop for StreamHold {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// Whether `cancelled` streams reset before their response, out of
/// `opened`, make a reset flood (see [`HTTP2_MAX_CANCELLED_STREAMS`]).
fn is_reset_flood(cancelled: u64, opened: u64) -> bool {
    cancelled >= HTTP2_MAX_CANCELLED_STREAMS && cancelled * 2 > opened
}

/// Which client timeout a connection's deadline is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// `client`: idle between requests.
    Idle,
    /// `http_request`: a head that did not finish arriving.
    Head,
    /// `client_body`: a response the client stopped reading.
    NotReading,
}

/// The client socket, reporting reads to its `ConnActivity` and following
/// the request stream (every head, every body) for framing conflicts.
#[derive(Debug)]
pub struct WatchedIo<T> {
    inner: T,
    activity: std::sync::Arc<ConnActivity>,
    scanner: RequestScanner,
    /// Whether reads go through `scanner` (HTTP/1 only: HTTP/2 frames its
    /// own messages, and its binary frames mean nothing to the scanner).
    scan: bool,
}

impl<T> WatchedIo<T> {
    /// Wraps `inner`, an HTTP/1 connection.
    pub fn new(inner: T, activity: std::sync::Arc<ConnActivity>) -> Self {
        Self {
            inner,
            activity,
            scanner: RequestScanner::default(),
            scan: true,
        }
    }

    /// Wraps `inner`, an HTTP/2 connection: timing only, no HTTP/1 scanning.
    pub fn unscanned(inner: T, activity: std::sync::Arc<ConnActivity>) -> Self {
        Self {
            scan: false,
            ..Self::new(inner, activity)
        }
    }

    /// The socket, once the connection became a tunnel.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T> WatchedIo<T> {
    /// Reports whether a write to the client went through or waits for it.
    fn note_write(&self, result: &Poll<io::Result<usize>>) {
        match result {
            Poll::Pending => self.activity.write_blocked(),
            Poll::Ready(_) => self.activity.write_moved(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            let this = &mut *self;
            // Whatever the phase: a pipelined head may come in the same read
            // as the body of the request before it.
            if this.scan {
                let known = this.scanner.first_conflict().is_some();
                this.scanner.scan(read);
                if let (false, Some(index)) = (known, this.scanner.first_conflict()) {
                    this.activity.framing_conflict.store(index, Ordering::Release);
                }
            }
            this.activity.on_read();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&result);
        result
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&result);
        result
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
        let activity = ConnActivity::default();
        let expiry = |a: &ConnActivity| a.deadline().map(|(_, why)| why);
        assert_eq!(expiry(&activity), Some(Expiry::Idle));
        activity.on_read();
        assert_eq!(expiry(&activity), Some(Expiry::Head));
        activity.request_started();
        assert_eq!(expiry(&activity), None);
        activity.write_blocked();
        assert_eq!(
            expiry(&activity),
            Some(Expiry::NotReading),
            "a response the client does not read"
        );
        activity.write_moved();
        assert_eq!(expiry(&activity), None);
        activity.request_finished();
        assert_eq!(expiry(&activity), Some(Expiry::Idle));
        activity.upgraded();
        assert_eq!(expiry(&activity), None);
    }

    #[test]
    fn a_reset_flood_is_many_cancelled_streams_and_most_of_them() {
        assert!(!is_reset_flood(
            HTTP2_MAX_CANCELLED_STREAMS - 1,
            HTTP2_MAX_CANCELLED_STREAMS
        ));
        assert!(is_reset_flood(HTTP2_MAX_CANCELLED_STREAMS, HTTP2_MAX_CANCELLED_STREAMS));
        assert!(
            !is_reset_flood(HTTP2_MAX_CANCELLED_STREAMS, 4 * HTTP2_MAX_CANCELLED_STREAMS),
            "a long-lived connection that served many"
        );
        let activity = ConnActivity::default();
        for _ in 0..HTTP2_MAX_CANCELLED_STREAMS {
            activity.request_started();
            activity.stream_cancelled();
        }
        assert!(activity.resets_too_many());
    }

    #[test]
    fn a_phase_change_wakes_the_watchdog_only_before_its_timer() {
        let activity = ConnActivity::default();
        assert!(
            activity.wakes().take_watchdog_mark(),
            "the first poll looks at the watchdog"
        );
        let in_a_while = |secs| Some(activity.epoch + Duration::from_secs(secs));
        // Armed at the idle deadline (30 s): a head's 10 s come first.
        activity.watchdog_armed(in_a_while(30));
        activity.on_read();
        assert!(activity.wakes().take_watchdog_mark());
        // Armed at the head's deadline: the idle deadline after the response is later.
        activity.watchdog_armed(in_a_while(10));
        activity.request_started();
        activity.request_finished();
        assert!(!activity.wakes().take_watchdog_mark(), "found when the timer fires");
        // No timer (busy): a client that stops reading needs one.
        activity.request_started();
        activity.watchdog_armed(None);
        activity.write_blocked();
        assert!(activity.wakes().take_watchdog_mark());
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
        let activity = ConnActivity::default();
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
