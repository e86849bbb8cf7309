//! The byte pump of an upgraded connection: bytes both ways until either
//! side closes, half-close passed on, an idle timeout, bytes counted.
//!
//! Each direction is a small state machine (read into its buffer, write it
//! out, pass EOF on as a write shutdown) polled from one task, so a tunnel
//! costs one task and two buffers. Both directions follow WebSocket frame
//! headers as bytes are written (`frames`), so tether can put its own Close
//! frame in front of the client at a frame boundary: 1012 when the server
//! connection dies or the server is taken out, 1001 when tether stops,
//! 1009 / 1002 / 1008 when the client breaks the frontend's limits, 1001
//! when the tunnel reached its `websocket.max_lifetime`.
//!
//! When tether closes a tunnel itself it does not just drop the sockets
//! (closing a socket with unread input sends a RST, which can destroy the
//! Close frame before the client reads it): after its Close it forwards
//! nothing new from the client, writes what it had already read to the
//! server followed by a Close (1001: the client is going away), shuts down
//! writing both ways, and reads (throwing away) until the client's Close or
//! end of stream and the server's end of stream, for at most `CLOSE_LINGER`.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep_until, Instant};

use crate::config::ConfigRate;
/// The frontend's WebSocket timers, defined with the rest of the runtime model.
pub use crate::snapshot::Timers;
use crate::state::{FrontendState, Traffic};
use crate::ws::control::TunnelControl;
use crate::ws::frames::{CloseCode, FrameTracker, PING_FRAME};

/// Buffer per direction.
const BUF_SIZE: usize = 16 * 1024;

/// How long tether waits for a frame boundary before closing without a Close frame.
pub const CLOSE_BOUNDARY_WAIT: Duration = Duration::from_secs(2);

/// After tether's own Close, how long it keeps reading (and throwing away)
/// for the peers' Close or end of stream before dropping the sockets.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// While bytes flow, how often a tunnel adds what it carried to its server's
/// counters (so stats show live rates); an idle tunnel adds nothing until it moves again.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Why a tunnel ended.
#[derive(Debug)]
pub enum CloseReason {
    /// The client closed first; the server's side was then finished too.
    ClientClosed,
    /// The server closed first; the client's side was then finished too.
    ServerClosed,
    /// The server connection ended without a WebSocket Close: tether sent the client 1012.
    ServerLost,
    /// tether closed the tunnel with this code (shutdown, drain, server taken out).
    ClosedByTether(CloseCode),
    /// No byte moved either way for the tunnel timeout.
    IdleTimeout(Duration),
    /// No byte moved either way for the frontend's `websocket.idle_timeout`: tether sent 1001.
    IdleClosed(Duration),
    /// The client sent nothing within `ping_timeout` of tether's ping: tether sent 1001.
    NoPong(Duration),
    /// The tunnel was open for its own lifetime limit (`websocket.max_lifetime`): tether sent 1001.
    MaxLifetime(Duration),
    /// Reading from or writing to the client failed.
    ClientError(io::Error),
    /// Reading from or writing to the server failed.
    ServerError(io::Error),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::ClientClosed => f.write_str("client closed"),
            CloseReason::ServerClosed => f.write_str("server closed"),
            CloseReason::ServerLost => f.write_str("server connection lost: sent 1012"),
            CloseReason::ClosedByTether(code) => write!(f, "closed by tether with {}", code.code()),
            CloseReason::IdleTimeout(d) => write!(f, "idle for {d:?}"),
            CloseReason::IdleClosed(d) => write!(f, "idle for {d:?}: sent 1001"),
            CloseReason::NoPong(d) => write!(f, "no answer to a ping within {d:?}: sent 1001"),
            CloseReason::MaxLifetime(d) => write!(f, "open for its max lifetime of {d:?}: sent 1001"),
            CloseReason::ClientError(e) => write!(f, "client error: {e}"),
            CloseReason::ServerError(e) => write!(f, "server error: {e}"),
        }
    }
}

/// What a finished tunnel reports.
#[derive(Debug)]
pub struct TunnelEnd {
    /// Bytes from the client to the server.
    pub client_to_server: u64,
    /// Bytes from the server to the client.
    pub server_to_client: u64,
    /// WebSocket messages from the client to the server.
    pub messages_in: u64,
    /// WebSocket messages from the server to the client.
    pub messages_out: u64,
    /// The code of the Close frame the client sent, if any.
    pub close_code_in: Option<u16>,
    /// The code of the Close frame the client received (from the server or from tether), if any.
    pub close_code_out: Option<u16>,
    /// Why it ended.
    pub reason: CloseReason,
}

impl TunnelEnd {
    /// A tunnel that failed with `err` before it carried a byte (its
    /// sockets could not be set up); counted as the client's error.
    pub fn never_started(err: io::Error) -> Self {
        Self {
            client_to_server: 0,
            server_to_client: 0,
            messages_in: 0,
            messages_out: 0,
            close_code_in: None,
            close_code_out: None,
            reason: CloseReason::ClientError(err),
        }
    }
}

/// Which peer an I/O error came from.
enum Side {
    Reader,
    Writer,
}

/// One direction of the tunnel.
struct Half {
    /// Bytes read but not yet written (`pending[start..]`). Empty, with no
    /// allocation, whenever the writer keeps up: an idle tunnel holds no buffer.
    pending: Vec<u8>,
    start: usize,
    /// The reader reached EOF.
    read_eof: bool,
    /// EOF was passed on with a write shutdown: this direction is finished.
    done: bool,
    /// Bytes written to the other side.
    moved: u64,
    /// Something was read since the last idle check.
    active: bool,
    /// Frame boundaries of what was written so far.
    frames: FrameTracker,
    /// tether's own Close frame is queued or written.
    close_queued: bool,
    /// Bytes were written since the last flush (a no-op for TCP, needed for layered streams).
    unflushed: bool,
    /// The other direction already carried a Close: the endpoint is closing on
    /// purpose, so a bare end of stream is not a lost server.
    peer_closing: bool,
    /// Client → server only: bytes that break the frontend's limits
    /// arrived; they were not forwarded and the client gets this Close code
    /// (1009 too big, 1002 protocol error, 1008 over the message rate).
    refused: Option<CloseCode>,
    /// While tether closes: the reader's input was read to its Close or end
    /// of stream (and thrown away), so the socket can be dropped without a RST.
    drained: bool,
    /// Client → server only: the message rate, if the frontend sets one.
    bucket: Option<Box<MessageBucket>>,
}

/// A per-tunnel token bucket of client messages (`websocket.max_messages`).
#[derive(Debug)]
struct MessageBucket {
    rate: ConfigRate,
    /// Messages the client may still send at once.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    refilled: Instant,
    /// Where a close for the rate is counted.
    frontend: Arc<FrontendState>,
}

impl MessageBucket {
    fn new(rate: ConfigRate, frontend: Arc<FrontendState>) -> Self {
        Self {
            rate,
            tokens: f64::from(rate.count),
            refilled: Instant::now(),
            frontend,
        }
    }

    /// Takes `messages` tokens if there are that many (after refilling for
    /// the time passed); otherwise takes what there is and says how many
    /// messages that allowed.
    fn take(&mut self, messages: u64, now: Instant) -> Result<(), u64> {
        if messages == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.rate.count);
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * capacity / self.rate.per.as_secs_f64()).min(capacity);
        self.refilled = now;
        let wanted = messages as f64;
        if self.tokens >= wanted {
            self.tokens -= wanted;
            return Ok(());
        }
        let allowed = self.tokens.floor();
        self.tokens -= allowed;
        Err(allowed as u64)
    }
}

/// What a client may send through a tunnel beyond frame sizes: messages per period.
#[derive(Debug, Clone)]
pub struct MessageRate {
    /// Messages per period (also the burst allowed at once).
    pub rate: ConfigRate,
    /// The frontend, whose `admission.message_rate_closes` counts the tunnels closed for it.
    pub frontend: Arc<FrontendState>,
}

thread_local! {
    /// One read buffer per worker thread, shared by every tunnel it runs:
    /// bytes are read into it and written on at once, so tunnels own no
    /// buffer of their own unless a writer is slower than its reader.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0u8; BUF_SIZE].into_boxed_slice());
}

/// What one read into the scratch buffer gave.
enum Read {
    /// Bytes were read and all written on.
    Moved,
    /// Bytes were read; some are kept in `pending` for a writer that is not ready.
    Kept,
    /// End of stream, or (with `close_on_loss`) a failed read.
    End,
    /// The bytes read break the limits (the Close code owed); nothing of them was written.
    Refused(CloseCode),
}

impl Half {
    fn new(pending: Bytes) -> Self {
        Self {
            // Bytes already read count as activity, so they are reported within a second too.
            active: !pending.is_empty(),
            pending: pending.to_vec(),
            start: 0,
            read_eof: false,
            done: false,
            moved: 0,
            frames: FrameTracker::default(),
            close_queued: false,
            unflushed: false,
            peer_closing: false,
            refused: None,
            drained: false,
            bucket: None,
        }
    }

    /// Whether tether may put a frame of its own into this direction now.
    fn at_boundary(&self) -> bool {
        self.start == self.pending.len() && self.frames.at_boundary()
    }

    /// Queues tether's Ping frame (call at a frame boundary only).
    fn queue_ping(&mut self) {
        self.pending = PING_FRAME.to_vec();
        self.start = 0;
    }

    /// Queues tether's Close frame; after it is written the writer is shut down.
    fn queue_close(&mut self, code: CloseCode) {
        self.pending = code.frame();
        self.start = 0;
        self.read_eof = true;
        self.close_queued = true;
    }

    /// Accounts for `n` bytes of `data` written on.
    fn wrote(&mut self, data: &[u8], n: usize) {
        self.frames.observe(&data[..n]);
        self.moved += n as u64;
        self.unflushed |= n > 0;
    }

    /// Moves bytes from `reader` to `writer` until both would block or EOF
    /// was passed on. `close_on_loss` (server → client only): when the
    /// reader fails or ends without a WebSocket Close, a 1012 Close goes in
    /// front of the client first.
    fn poll_pump<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        close_on_loss: bool,
    ) -> Poll<Result<(), (Side, io::Error)>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            while self.start < self.pending.len() {
                let n = ready!(Pin::new(&mut *writer).poll_write(cx, &self.pending[self.start..]))
                    .map_err(|e| (Side::Writer, e))?;
                if n == 0 {
                    return Poll::Ready(Err((Side::Writer, io::ErrorKind::WriteZero.into())));
                }
                let pending = std::mem::take(&mut self.pending);
                self.wrote(&pending[self.start..], n);
                self.pending = pending;
                self.start += n;
            }
            if !self.pending.is_empty() {
                // Caught up: give the memory back.
                self.pending = Vec::new();
                self.start = 0;
            }
            if self.unflushed {
                ready!(Pin::new(&mut *writer).poll_flush(cx)).map_err(|e| (Side::Writer, e))?;
                self.unflushed = false;
            }
            if self.read_eof {
                ready!(Pin::new(&mut *writer).poll_shutdown(cx)).map_err(|e| (Side::Writer, e))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            match ready!(self.read_and_forward(cx, reader, writer, close_on_loss))? {
                Read::Moved => continue,
                Read::Kept => continue, // the write loop above registers the waker
                Read::Refused(code) => {
                    self.refused = Some(code);
                    return Poll::Ready(Ok(()));
                }
                Read::End => {
                    // A server that vanished without a WebSocket Close leaves
                    // the client a 1012 instead of a bare close.
                    if close_on_loss && !self.peer_closing && !self.frames.saw_close() && self.frames.at_boundary() {
                        self.queue_close(CloseCode::ServiceRestart);
                    } else {
                        self.read_eof = true;
                    }
                }
            }
        }
    }

    /// Reads once into the worker's scratch buffer and writes what it can at
    /// once; the rest is kept in `pending`.
    fn read_and_forward<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        close_on_loss: bool,
    ) -> Poll<Result<Read, (Side, io::Error)>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut read_buf = ReadBuf::new(&mut scratch[..]);
            let read = ready!(Pin::new(&mut *reader).poll_read(cx, &mut read_buf));
            let n = read_buf.filled().len();
            if let Err(err) = read {
                if !close_on_loss {
                    return Poll::Ready(Err((Side::Reader, err)));
                }
                return Poll::Ready(Ok(Read::End));
            }
            if n == 0 {
                return Poll::Ready(Ok(Read::End));
            }
            self.active = true;
            let data = &scratch[..n];
            if self.frames.is_limited() {
                // Look ahead on a copy, so a frame over the limits (or over
                // the message rate) never reaches the server.
                // What comes before the offending frame still goes (when
                // tether's Close has gone to the client, see `poll_finish`),
                // so the server's stream ends at a frame boundary and can
                // get a Close too.
                let mut probe = self.frames.clone();
                probe.observe(data);
                if let Some(code) = probe.violation() {
                    let clean = self.frames.prefix_before(data, |p| p.violation().is_some());
                    self.pending = data[..clean].to_vec();
                    self.start = 0;
                    return Poll::Ready(Ok(Read::Refused(code)));
                }
                if let Some(bucket) = self.bucket.as_mut() {
                    let base = self.frames.messages();
                    let messages = probe.messages() - base;
                    if let Err(allowed) = bucket.take(messages, Instant::now()) {
                        bucket
                            .frontend
                            .admission
                            .message_rate_closes
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let clean = self.frames.prefix_before(data, |p| p.messages() > base + allowed);
                        self.pending = data[..clean].to_vec();
                        self.start = 0;
                        return Poll::Ready(Ok(Read::Refused(CloseCode::PolicyViolation)));
                    }
                }
            }
            let written = match Pin::new(&mut *writer).poll_write(cx, data) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err((Side::Writer, io::ErrorKind::WriteZero.into())));
                }
                Poll::Ready(Ok(w)) => w,
                Poll::Ready(Err(e)) => return Poll::Ready(Err((Side::Writer, e))),
                Poll::Pending => 0,
            };
            self.wrote(data, written);
            if written == n {
                return Poll::Ready(Ok(Read::Moved));
            }
            self.pending = data[written..].to_vec();
            self.start = 0;
            Poll::Ready(Ok(Read::Kept))
        })
    }
}

impl Half {
    /// Client → server, once tether's Close went to the client: writes what
    /// was already read from the client, then (at a frame boundary, unless
    /// the client sent its own Close) a Close as a client sends it, then
    /// shuts the server's write side. A failed write ends it quietly: the
    /// server side is going anyway.
    fn poll_finish<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut W,
        close: Option<CloseCode>,
    ) -> Poll<()> {
        loop {
            while self.start < self.pending.len() {
                match Pin::new(&mut *writer).poll_write(cx, &self.pending[self.start..]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        if !self.close_queued {
                            // The client's own bytes (tether's Close is not the client's).
                            let pending = std::mem::take(&mut self.pending);
                            self.wrote(&pending[self.start..], n);
                            self.pending = pending;
                        }
                        self.start += n;
                    }
                    Poll::Ready(_) => {
                        self.done = true;
                        return Poll::Ready(());
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.close_queued {
                break;
            }
            self.close_queued = true;
            let at_boundary = self.frames.at_boundary() && !self.frames.saw_close();
            match close.filter(|_| at_boundary) {
                Some(code) => {
                    // Any mask is valid: the frame's content is tether's own.
                    let mask = (self.moved as u32 ^ 0x7e7e_5a5a).to_be_bytes();
                    self.pending = code.client_frame(mask);
                    self.start = 0;
                }
                None => break,
            }
        }
        // Flushed and shut down even when a write failed before: errors end it just as well.
        if ready!(Pin::new(&mut *writer).poll_flush(cx)).is_ok() {
            let _ = ready!(Pin::new(&mut *writer).poll_shutdown(cx));
        }
        self.pending = Vec::new();
        self.start = 0;
        self.done = true;
        Poll::Ready(())
    }

    /// Reads `reader` and throws the bytes away until its end of stream (or
    /// an error), or, with `until_close`, until the Close frame it sends
    /// ends. Ready once drained.
    fn poll_drain<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        until_close: bool,
    ) -> Poll<()> {
        self.frames.discard_from_now();
        while !self.drained {
            if until_close && self.frames.saw_close() && self.frames.at_boundary() {
                self.drained = true;
                break;
            }
            let read = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut read_buf = ReadBuf::new(&mut scratch[..]);
                let read = ready!(Pin::new(&mut *reader).poll_read(cx, &mut read_buf));
                let n = read_buf.filled().len();
                if read.is_err() || n == 0 {
                    return Poll::Ready(false);
                }
                if until_close {
                    self.frames.observe(&scratch[..n]);
                }
                Poll::Ready(true)
            });
            if !ready!(read) {
                self.drained = true;
            }
        }
        Poll::Ready(())
    }
}

/// How one tunnel runs.
#[derive(Clone)]
pub struct Settings {
    /// Close after this long without a byte either way.
    pub idle: Duration,
    /// Where tether asks the tunnel to close with a code of its own.
    pub close: Arc<TunnelControl>,
    /// Where the tunnel reports its bytes and messages as they pass.
    pub traffic: Arc<Traffic>,
    /// Largest client frame and message payloads, if limited (1009 beyond).
    pub client_limits: Option<(u64, u64)>,
    /// Most client messages per period, if limited (1008 beyond).
    pub max_messages: Option<MessageRate>,
    /// The frontend's WebSocket idle and ping timers.
    pub timers: Timers,
    /// This tunnel's own lifetime limit, if the frontend sets one.
    pub lifetime: Option<Lifetime>,
}

/// One tunnel's lifetime limit (drawn within the frontend's jitter, see
/// `Timers::lifetime`) and where a close for it is counted.
#[derive(Debug, Clone)]
pub struct Lifetime {
    /// How long after it opened the tunnel is closed with 1001 "max lifetime".
    pub limit: Duration,
    /// The frontend, whose `lifetime_closes` counts the tunnels closed for it.
    pub frontend: Arc<FrontendState>,
}

/// A running tunnel's lifetime deadline.
struct Deadline {
    /// When the tunnel reaches its limit.
    at: Instant,
    /// The limit (for the log line).
    limit: Duration,
    /// Where the close is counted.
    frontend: Arc<FrontendState>,
}

/// The peer whose direction ended first, when both end on their own.
#[derive(Debug, Clone, Copy)]
enum FirstCloser {
    Client,
    Server,
}

/// Ping bookkeeping of one tunnel.
struct Pinger {
    interval: Duration,
    timeout: Duration,
    /// When the next ping is due: `interval` after the client last sent
    /// anything (or shortly, when the server was mid-frame at the last try).
    ping_at: Instant,
    /// When tether's unanswered ping went out.
    sent: Option<Instant>,
}

impl Pinger {
    /// When something is due: the ping, or the end of the wait for an answer.
    fn due(&self) -> Instant {
        match self.sent {
            Some(sent) => sent + self.timeout,
            None => self.ping_at,
        }
    }
}

/// How long to wait before trying again to ping a client whose server is mid-frame.
const PING_RETRY: Duration = Duration::from_millis(250);

pin_project_lite::pin_project! {
    /// One tunnel as a future (see `run`). A plain struct rather than an
    /// `async fn`, so an idle tunnel's task holds exactly these fields and
    /// nothing the compiler keeps for arguments and borrows (an idle
    /// WebSocket costs its task, its sockets and little else).
    #[project = TunnelProjection]
    pub struct Tunnel<C, S> {
        client: C,
        server: S,
        // Client → server.
        up: Half,
        // Server → client.
        down: Half,
        // Where tether asks to close, and where traffic is reported.
        close: Arc<TunnelControl>,
        traffic: Arc<Traffic>,
        // The idle limit in force, and the Close it sends (None: close bare).
        idle: Duration,
        idle_code: Option<CloseCode>,
        // Which side finished first (1 byte, not a 24-byte `CloseReason`: see `footprint`).
        first_closer: Option<FirstCloser>,
        last_activity: Instant,
        // Boxed: most frontends do not ping, and the unboxed 64 bytes moved
        // every idle tunnel's task into the next allocation size (see `footprint`).
        pinger: Option<Box<Pinger>>,
        // Boxed for the same reason: most frontends set no max_lifetime.
        deadline: Option<Box<Deadline>>,
        // Bytes in, bytes out, messages in, messages out already added to `traffic`.
        reported: [u64; 4],
        // The timer is set for the next report rather than the next deadline.
        report_armed: bool,
        closing: Option<CloseCode>,
        // Only made when tether starts closing: an idle tunnel carries one timer, not two.
        boundary_wait: Option<Pin<Box<tokio::time::Sleep>>>,
        #[pin]
        timer: tokio::time::Sleep,
    }
}

/// Pumps bytes between `client` and `server` until both directions finished,
/// one side failed, or `idle` passed without traffic. When `close` is asked
/// for a code, tether sends the client that Close frame at the next frame
/// boundary and ends the tunnel. `client_pending` / `server_pending` are
/// bytes each side sent right after the handshake, already read by the HTTP
/// layer; they go first. What the tunnel carries is added to `traffic`
/// about once a second while it moves and when it ends, never per read.
pub fn run<C, S>(client: C, client_pending: Bytes, server: S, server_pending: Bytes, settings: Settings) -> Tunnel<C, S>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Settings {
        idle,
        close,
        traffic,
        client_limits,
        max_messages,
        timers,
        lifetime,
    } = settings;
    // The frontend's idle timeout, when it is the shorter one, closes with 1001.
    let (idle, idle_code) = match timers.idle {
        Some(ws_idle) if ws_idle <= idle => (ws_idle, Some(CloseCode::Idle)),
        _ => (idle, None),
    };
    let mut up = Half::new(client_pending);
    // What a client sends is always checked: control frames over 125 bytes
    // break the protocol whatever the frontend's limits.
    let (max_frame, max_message) = client_limits.unwrap_or((u64::MAX, u64::MAX));
    up.frames = FrameTracker::with_limits(max_frame, max_message);
    up.bucket = max_messages.map(|m| Box::new(MessageBucket::new(m.rate, m.frontend)));
    let last_activity = Instant::now();
    let pinger = timers.ping_interval.map(|interval| {
        Box::new(Pinger {
            interval,
            timeout: timers.ping_timeout.unwrap_or(interval),
            ping_at: last_activity + interval,
            sent: None,
        })
    });
    let deadline = lifetime.map(|l| {
        Box::new(Deadline {
            at: last_activity + l.limit,
            limit: l.limit,
            frontend: l.frontend,
        })
    });
    Tunnel {
        client,
        server,
        up,
        down: Half::new(server_pending),
        close,
        traffic,
        idle,
        idle_code,
        first_closer: None,
        last_activity,
        timer: sleep_until(next_due(last_activity, idle, &pinger, &deadline)),
        pinger,
        deadline,
        reported: [0; 4],
        report_armed: false,
        closing: None,
        boundary_wait: None,
    }
}

/// The next deadline: the idle limit, the ping's or the lifetime's, whichever comes first.
fn next_due(
    last_activity: Instant,
    idle: Duration,
    pinger: &Option<Box<Pinger>>,
    deadline: &Option<Box<Deadline>>,
) -> Instant {
    let idle_at = last_activity + idle;
    let due = pinger.as_ref().map_or(idle_at, |p| p.due().min(idle_at));
    deadline.as_ref().map_or(due, |d| d.at.min(due))
}

impl<C, S> Future for Tunnel<C, S>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Output = TunnelEnd;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TunnelEnd> {
        let mut this = self.project();
        let reason = ready!(poll_tunnel(&mut this, cx));
        let (up, down) = (&*this.up, &*this.down);
        report(this.traffic, up, down, this.reported);
        Poll::Ready(TunnelEnd {
            client_to_server: up.moved,
            server_to_client: down.moved,
            messages_in: up.frames.messages(),
            messages_out: down.frames.messages(),
            close_code_in: up.frames.close_code(),
            close_code_out: down.frames.close_code(),
            reason,
        })
    }
}

/// One poll of the tunnel: moves what can move, then says why it ended, if it did.
fn poll_tunnel<C, S>(t: &mut TunnelProjection<'_, C, S>, cx: &mut Context<'_>) -> Poll<CloseReason>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    if t.down.close_queued && t.down.done {
        return poll_linger(t, cx);
    }
    let (up, down) = (&mut *t.up, &mut *t.down);
    if t.closing.is_none() {
        if let Poll::Ready(code) = t.close.poll_requested(cx) {
            *t.closing = Some(code);
            *t.boundary_wait = Some(Box::pin(sleep_until(Instant::now() + CLOSE_BOUNDARY_WAIT)));
        }
    }
    if let Some(code) = *t.closing {
        if !down.close_queued && !down.done && down.at_boundary() {
            down.queue_close(code);
        }
        let waited_out = t
            .boundary_wait
            .as_mut()
            .is_some_and(|wait| wait.as_mut().poll(cx).is_ready());
        if !down.close_queued && waited_out {
            // The server is in the middle of a frame it does not finish: close bare.
            return Poll::Ready(CloseReason::ClosedByTether(code));
        }
    }
    if !up.done && up.refused.is_none() {
        match up.poll_pump(cx, &mut *t.client, &mut *t.server, false) {
            Poll::Ready(Ok(())) if up.refused.is_some() => {
                // Answer at the next frame boundary towards the client; the
                // client's further bytes are no longer forwarded.
                if let Some(code) = up.refused.filter(|_| t.closing.is_none()) {
                    start_closing(t.closing, t.boundary_wait, code, cx);
                    return Poll::Pending;
                }
            }
            Poll::Ready(Ok(())) => {
                t.first_closer.get_or_insert(FirstCloser::Client);
            }
            Poll::Ready(Err((Side::Reader, e))) => return Poll::Ready(CloseReason::ClientError(e)),
            Poll::Ready(Err((Side::Writer, e))) => return Poll::Ready(CloseReason::ServerError(e)),
            Poll::Pending => {}
        }
    }
    if !down.done {
        down.peer_closing = up.frames.saw_close();
        match down.poll_pump(cx, &mut *t.server, &mut *t.client, true) {
            Poll::Ready(Ok(())) if down.close_queued => {
                // tether's Close is out: the client will reconnect; nothing
                // more to carry. Finish both sides cleanly, for a bounded time.
                *t.boundary_wait = Some(Box::pin(sleep_until(Instant::now() + CLOSE_LINGER)));
                return poll_linger(t, cx);
            }
            Poll::Ready(Ok(())) => {
                t.first_closer.get_or_insert(FirstCloser::Server);
            }
            Poll::Ready(Err((Side::Reader, e))) => return Poll::Ready(CloseReason::ServerError(e)),
            Poll::Ready(Err((Side::Writer, e))) => return Poll::Ready(CloseReason::ClientError(e)),
            Poll::Pending => {}
        }
    }
    // Both directions finished, or one did after the WebSocket closing
    // handshake completed both ways: nothing more can legitimately pass,
    // so a peer that keeps its TCP connection open is not waited for.
    let handshake_done = up.frames.saw_close() && down.frames.saw_close();
    if (up.done && down.done) || ((up.done || down.done) && handshake_done) {
        return Poll::Ready(match t.first_closer.take() {
            Some(FirstCloser::Server) => CloseReason::ServerClosed,
            Some(FirstCloser::Client) | None => CloseReason::ClientClosed,
        });
    }
    let idle = *t.idle;
    if up.active || down.active {
        *t.last_activity = Instant::now();
        if let (true, Some(pinger)) = (up.active, t.pinger.as_mut()) {
            pinger.ping_at = *t.last_activity + pinger.interval;
            pinger.sent = None;
        }
        up.active = false;
        down.active = false;
        if !*t.report_armed {
            *t.report_armed = true;
            let report_at = *t.last_activity + REPORT_EVERY.min(idle);
            let due = next_due(*t.last_activity, idle, t.pinger, t.deadline);
            t.timer.as_mut().reset(report_at.min(due));
        }
    }
    // The timer is only re-armed when it fires (or for the first traffic
    // after a report), not on every read.
    while t.timer.as_mut().poll(cx).is_ready() {
        let now = Instant::now();
        if let Some(deadline) = t.deadline.as_ref().filter(|d| d.at <= now && t.closing.is_none()) {
            // At the next frame boundary towards the client, like every close of tether's own.
            deadline
                .frontend
                .lifetime_closes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            start_closing(t.closing, t.boundary_wait, CloseCode::MaxLifetime, cx);
        }
        if *t.last_activity + idle <= now {
            match *t.idle_code {
                None => return Poll::Ready(CloseReason::IdleTimeout(idle)),
                Some(code) => start_closing(t.closing, t.boundary_wait, code, cx),
            }
        }
        if let Some(pinger) = t.pinger.as_mut() {
            match pinger.sent {
                Some(sent) if sent + pinger.timeout <= now => {
                    start_closing(t.closing, t.boundary_wait, CloseCode::NoPong, cx);
                }
                None if pinger.ping_at <= now => {
                    if t.closing.is_none() && !down.done && !down.close_queued && down.at_boundary() {
                        down.queue_ping();
                        pinger.sent = Some(now);
                        cx.waker().wake_by_ref();
                    } else {
                        // The server is mid-frame: try again shortly.
                        pinger.ping_at = now + PING_RETRY;
                    }
                }
                _ => {}
            }
        }
        report(t.traffic, up, down, t.reported);
        *t.report_armed = false;
        let next = next_due(*t.last_activity, idle, t.pinger, t.deadline);
        // Once closing, the boundary wait decides; keep the timer from spinning.
        t.timer
            .as_mut()
            .reset(if next <= now { now + CLOSE_BOUNDARY_WAIT } else { next });
    }
    Poll::Pending
}

/// After tether's Close went to the client: what the client had sent goes
/// to the server with a Close of its own, both write sides are shut, and
/// both peers are read (and their bytes thrown away) until the client's
/// Close or end of stream and the server's end of stream, or `CLOSE_LINGER`.
/// Dropping a socket with unread input would send a RST, which can destroy
/// the Close frame before the client reads it.
fn poll_linger<C, S>(t: &mut TunnelProjection<'_, C, S>, cx: &mut Context<'_>) -> Poll<CloseReason>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (up, down) = (&mut *t.up, &mut *t.down);
    let lingered = t
        .boundary_wait
        .as_mut()
        .is_none_or(|wait| wait.as_mut().poll(cx).is_ready());
    let finished = lingered || {
        // The server's side: nothing more goes to it after its Close (none
        // to a server that is already gone), then its input runs dry.
        // The client is going away (1001); the server hears "max lifetime" when that is why.
        let to_server = t.closing.map(|code| match code {
            CloseCode::MaxLifetime => code,
            _ => CloseCode::GoingAway,
        });
        let up_done = up.done || up.poll_finish(cx, &mut *t.server, to_server).is_ready();
        let server_drained = down.poll_drain(cx, &mut *t.server, false).is_ready();
        // The client's input, once what was read before went on: to its
        // Close (not followed after a refused frame, so to its end then).
        let until_close = up.refused.is_none();
        let client_drained = up_done && up.poll_drain(cx, &mut *t.client, until_close).is_ready();
        server_drained && client_drained
    };
    if !finished {
        return Poll::Pending;
    }
    Poll::Ready(match *t.closing {
        Some(CloseCode::Idle) => CloseReason::IdleClosed(*t.idle),
        Some(CloseCode::NoPong) => CloseReason::NoPong(t.pinger.as_ref().map_or(Duration::ZERO, |p| p.timeout)),
        Some(CloseCode::MaxLifetime) => {
            CloseReason::MaxLifetime(t.deadline.as_ref().map_or(Duration::ZERO, |d| d.limit))
        }
        Some(code) => CloseReason::ClosedByTether(code),
        None => CloseReason::ServerLost,
    })
}

/// Starts tether's closing with `code` (unless a close is already under
/// way): the Close goes to the client at the next frame boundary.
fn start_closing(
    closing: &mut Option<CloseCode>,
    boundary_wait: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    code: CloseCode,
    cx: &mut Context<'_>,
) {
    if closing.is_none() {
        *closing = Some(code);
        *boundary_wait = Some(Box::pin(sleep_until(Instant::now() + CLOSE_BOUNDARY_WAIT)));
        cx.waker().wake_by_ref();
    }
}

/// Adds what the tunnel carried since the last report to `traffic`.
fn report(traffic: &Traffic, up: &Half, down: &Half, reported: &mut [u64; 4]) {
    let now = [up.moved, down.moved, up.frames.messages(), down.frames.messages()];
    if now != *reported {
        traffic.add(
            now[0] - reported[0],
            now[1] - reported[1],
            now[2] - reported[2],
            now[3] - reported[3],
        );
        *reported = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_flow_both_ways_with_pending_first_and_half_close() {
        let (client_outer, client_inner) = duplex(64);
        let (server_inner, server_outer) = duplex(64);
        let tunnel = tokio::spawn(async move {
            let never_asked = Arc::new(TunnelControl::default());
            // A masked text frame "early-" (mask 0), as a client sends it.
            let early = Bytes::from_static(b"\x81\x86\0\0\0\0early-");
            run(
                client_inner,
                early,
                server_inner,
                Bytes::from_static(b"hello-"),
                Settings {
                    idle: Duration::from_secs(60),
                    close: never_asked,
                    traffic: Arc::default(),
                    client_limits: None,
                    max_messages: None,
                    timers: Timers::default(),
                    lifetime: None,
                },
            )
            .await
        });
        let (mut c_read, mut c_write) = tokio::io::split(client_outer);
        let (mut s_read, mut s_write) = tokio::io::split(server_outer);
        // One masked binary frame of 100,000 bytes.
        let mut payload = vec![0x82, 0x80 | 127];
        payload.extend_from_slice(&100_000u64.to_be_bytes());
        payload.extend_from_slice(&[0; 4]);
        payload.extend((0..100_000u32).map(|i| (i % 251) as u8));
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            c_write.write_all(&sent).await.unwrap();
            c_write.shutdown().await.unwrap();
        });
        let mut at_server = Vec::new();
        s_read.read_to_end(&mut at_server).await.unwrap();
        writer.await.unwrap();
        assert_eq!(&at_server[6..12], b"early-");
        assert_eq!(&at_server[12..], &payload[..]);
        // The client half-closed; the server can still answer.
        s_write.write_all(b"bye").await.unwrap();
        s_write.shutdown().await.unwrap();
        let mut at_client = Vec::new();
        c_read.read_to_end(&mut at_client).await.unwrap();
        assert_eq!(at_client, b"hello-bye");
        let end = tunnel.await.unwrap();
        assert!(matches!(end.reason, CloseReason::ClientClosed), "{}", end.reason);
        assert_eq!(end.client_to_server, 12 + 14 + 100_000);
        assert_eq!(end.server_to_client, 9);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_tunnel_reports_its_traffic_about_once_a_second_and_the_rest_at_the_end() {
        let traffic = std::sync::Arc::new(Traffic::default());
        let (mut client_outer, client_inner) = duplex(1024);
        let (server_inner, mut server_outer) = duplex(1024);
        let counters = traffic.clone();
        let tunnel = tokio::spawn(async move {
            let never_asked = Arc::new(TunnelControl::default());
            let idle = Duration::from_secs(3600);
            run(
                client_inner,
                Bytes::new(),
                server_inner,
                Bytes::new(),
                Settings {
                    idle,
                    close: never_asked,
                    traffic: counters,
                    client_limits: None,
                    max_messages: None,
                    timers: Timers::default(),
                    lifetime: None,
                },
            )
            .await
        });
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        // A masked one-byte text frame, as a client sends it.
        let frame = [0x81, 0x81, 0, 0, 0, 0, b'a'];
        client_outer.write_all(&frame).await.unwrap();
        let mut got = [0u8; 7];
        server_outer.read_exact(&mut got).await.unwrap();
        assert_eq!(load(&traffic.bytes_in), 0, "nothing is added per read");
        tokio::time::advance(Duration::from_millis(1100)).await;
        tokio::task::yield_now().await;
        assert_eq!(load(&traffic.bytes_in), 7, "reported within about a second");
        assert_eq!(load(&traffic.messages_in), 1);
        // Idle now: no more reports, nothing more to add.
        tokio::time::advance(Duration::from_secs(5)).await;
        server_outer.write_all(&[0x81, 0x02, b'o', b'k']).await.unwrap();
        let mut back = [0u8; 4];
        client_outer.read_exact(&mut back).await.unwrap();
        drop(client_outer);
        drop(server_outer);
        let end = tunnel.await.unwrap();
        assert_eq!(load(&traffic.bytes_in), end.client_to_server);
        assert_eq!(load(&traffic.bytes_out), 4, "the rest is added at the end");
        assert_eq!(load(&traffic.messages_out), 1);
        assert_eq!(load(&traffic.messages_in), 1, "nothing is added twice");
    }

    #[test]
    fn the_message_bucket_allows_its_burst_then_refills_evenly() {
        let start = Instant::now();
        let rate = ConfigRate {
            count: 10,
            per: Duration::from_secs(1),
        };
        let mut bucket = MessageBucket::new(rate, Arc::default());
        bucket.refilled = start;
        assert_eq!(bucket.take(10, start), Ok(()), "the burst");
        assert_eq!(bucket.take(1, start), Err(0));
        assert_eq!(
            bucket.take(3, start + Duration::from_millis(250)),
            Err(2),
            "2.5 tokens came back: two of the three messages may pass"
        );
        assert_eq!(bucket.take(1, start + Duration::from_millis(350)), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn at_its_max_lifetime_a_tunnel_closes_with_1001_after_the_frame_under_way() {
        let (mut client_outer, client_inner) = duplex(1024);
        let (server_inner, mut server_outer) = duplex(1024);
        let frontend = Arc::new(FrontendState::default());
        let counted = frontend.clone();
        let tunnel = tokio::spawn(async move {
            run(
                client_inner,
                Bytes::new(),
                server_inner,
                Bytes::new(),
                Settings {
                    idle: Duration::from_secs(3600),
                    close: Arc::default(),
                    traffic: Arc::default(),
                    client_limits: None,
                    max_messages: None,
                    timers: Timers::default(),
                    lifetime: Some(Lifetime {
                        limit: Duration::from_secs(10),
                        frontend: counted,
                    }),
                },
            )
            .await
        });
        // The server starts a 10-byte text frame before the limit...
        server_outer
            .write_all(&[0x81, 10, b'h', b'e', b'l', b'l', b'o'])
            .await
            .unwrap();
        let mut head = [0u8; 7];
        client_outer.read_exact(&mut head).await.unwrap();
        tokio::time::advance(Duration::from_secs(11)).await;
        tokio::task::yield_now().await;
        let mut more = [0u8; 64];
        let early = tokio::time::timeout(Duration::from_millis(100), client_outer.read(&mut more)).await;
        assert!(early.is_err(), "nothing may cut into the frame under way: {early:?}");
        assert_eq!(frontend.lifetime_closes.load(std::sync::atomic::Ordering::Relaxed), 1);
        // ...and ends it after: the frame arrives whole, then tether's Close.
        server_outer.write_all(b"world").await.unwrap();
        let mut rest = [0u8; 5];
        client_outer.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"world");
        let close = CloseCode::MaxLifetime.frame();
        let mut got = vec![0u8; close.len()];
        client_outer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, close);
        assert_eq!(&got[2..], b"\x03\xe9max lifetime");
        // The server gets a Close of tether's own (masked, as from a client).
        let mut to_server = [0u8; 2];
        server_outer.read_exact(&mut to_server).await.unwrap();
        assert_eq!(to_server, [0x88, 0x80 | (2 + 12)]);
        drop(client_outer);
        drop(server_outer);
        let end = tunnel.await.unwrap();
        assert!(
            matches!(end.reason, CloseReason::MaxLifetime(d) if d == Duration::from_secs(10)),
            "{}",
            end.reason
        );
        assert_eq!(end.close_code_out, Some(1001));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_tunnel_is_closed_after_its_timeout() {
        let (_client_outer, client_inner) = duplex(64);
        let (server_inner, mut server_outer) = duplex(64);
        let tunnel = tokio::spawn(async move {
            let never_asked = Arc::new(TunnelControl::default());
            run(
                client_inner,
                Bytes::from_static(b"x"),
                server_inner,
                Bytes::new(),
                Settings {
                    idle: Duration::from_secs(30),
                    close: never_asked,
                    traffic: Arc::default(),
                    client_limits: None,
                    max_messages: None,
                    timers: Timers::default(),
                    lifetime: None,
                },
            )
            .await
        });
        let mut one = [0u8; 1];
        server_outer.read_exact(&mut one).await.unwrap();
        tokio::time::advance(Duration::from_secs(20)).await;
        server_outer.write_all(b"y").await.unwrap();
        tokio::time::advance(Duration::from_secs(20)).await;
        tokio::task::yield_now().await;
        assert!(!tunnel.is_finished(), "traffic at 20 s must push the deadline to 50 s");
        tokio::time::advance(Duration::from_secs(15)).await;
        let end = tunnel.await.unwrap();
        assert!(matches!(end.reason, CloseReason::IdleTimeout(_)), "{}", end.reason);
    }
}
#[cfg(test)]
mod footprint {
    use super::*;

    /// An idle WebSocket costs about the size of this future (plus its task
    /// header and two socket registrations): a guard against it growing back
    /// (it was 1,152 bytes as an `async fn` over `poll_fn`; 696 as a struct;
    /// 592 with compact frame trackers and the pinger boxed; 576 with the
    /// first closer in one byte, the lifetime deadline boxed).
    #[tokio::test]
    async fn a_tunnel_between_two_tcp_sockets_stays_within_600_bytes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let server = listener.accept().await.unwrap().0;
        let settings = Settings {
            idle: Duration::from_secs(1),
            close: Arc::default(),
            traffic: Arc::default(),
            client_limits: None,
            max_messages: None,
            timers: Timers::default(),
            lifetime: None,
        };
        let tunnel = run(client, Bytes::new(), server, Bytes::new(), settings);
        let size = std::mem::size_of_val(&tunnel);
        assert!(size <= 600, "the tunnel future grew to {size} bytes");
    }
}
