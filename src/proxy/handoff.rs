//! The hand-off of an upgraded connection: the job that waits for both
//! sides to switch protocols, then the task that owns the two halves of the
//! tunnel, its registration with its server, and its end (counts and the
//! access-log line).

use crate::util::clock::Moment;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::conn::{StreamHold, WatchedIo};
use super::context::ConnContext;
use super::log::{HttpLog, Protocol, RequestId, TunnelLog};
use super::trace::trace_id_number;
use super::{tunnel, TrackerToken};
use crate::config::TunnelEngine;
use crate::snapshot::{Backend, Frontend, Server};
use crate::state::ActiveGuard;
use crate::sticky::table::StickHold;
use crate::telemetry::{RequestSpan, TunnelSummary, TunnelTrace};
use crate::tls::{ClientStream, UpstreamStream};
#[cfg(target_os = "linux")]
use crate::uring::RingStream;
use crate::util::mix::{unit_of, AtomicSplitMix64};

/// Everything a tunnel task needs once both sides have switched protocols.
pub(super) struct TunnelJob {
    /// What the open tunnel will hold.
    pub(super) holds: TunnelHolds,
    /// The backend's tunnel idle timeout.
    pub(super) idle: std::time::Duration,
    /// The frontend's WebSocket frame and message limits (client → server).
    pub(super) limits: Option<(u64, u64)>,
    /// The frontend's message rate per tunnel, if any.
    pub(super) max_messages: Option<tunnel::MessageRate>,
    /// The frontend's WebSocket idle and ping timers.
    pub(super) timers: tunnel::Timers,
    /// This tunnel's own lifetime limit, drawn within the frontend's jitter.
    pub(super) lifetime: Option<tunnel::Lifetime>,
    /// Rebalancing moved the client here from the server it was stuck to
    /// (read once, at registration: the open tunnel's task does not carry it,
    /// see `footprint`).
    pub(super) moved: bool,
    /// What carries the tunnel's bytes (`[tunnel] engine`).
    pub(super) engine: TunnelEngine,
}

/// What an open tunnel holds besides its sockets: the counts it keeps up
/// and what its access-log line will say.
pub(super) struct TunnelHolds {
    /// Keeps a graceful stop waiting for this tunnel.
    pub(super) token: TrackerToken,
    /// Keeps the tunnel counted among its frontend's open connections (the
    /// HTTP connection that carried the handshake ends with the upgrade).
    pub(super) frontend_connection: crate::state::FrontendConnection,
    /// The client's address (for the access-log line).
    pub(super) client: SocketAddr,
    /// The handshake's request id (for the access-log line).
    pub(super) request_id: RequestId,
    /// The frontend's name (for the access-log line).
    pub(super) frontend: Arc<str>,
    /// The backend's name (for the access-log line).
    pub(super) backend: Arc<str>,
    /// The server's name (for the access-log line).
    pub(super) server: Arc<str>,
    /// The access log of the handshake's snapshot (format and destination).
    pub(super) access: Arc<crate::access_log::Logger>,
    /// The server slot, held for the tunnel's whole life (leastconn counts it).
    pub(super) guard: ActiveGuard,
    /// What only some tunnels hold (boxed together: most hold neither, see `footprint`).
    pub(super) seldom: Option<Box<Seldom>>,
    /// The client connection's hold of its HTTP/2 stream (`None`: the
    /// tunnel is the whole HTTP/1.1 connection).
    pub(super) stream: Option<StreamHold>,
}

/// What only some open tunnels hold.
#[derive(Default)]
pub(super) struct Seldom {
    /// The learned session ids that led here, kept from expiring while the tunnel lives.
    stick: Option<StickHold>,
    /// The handshake's trace (`[tracing]`), whose child span the tunnel's end exports.
    trace: Option<TunnelTrace>,
}

impl TunnelJob {
    /// The job for a handshake `server` of `backend` accepted, holding the
    /// server's slot `guard` (and whether rebalancing `moved` the client
    /// there), the learned ids `stick` and the frontend's count of it
    /// (`counted`, taken before the handshake for a stream of an HTTP/2
    /// connection; else the connection's own count carries over); what its
    /// log line says comes from `log`.
    pub(super) fn new(
        context: &ConnContext,
        frontend: &Frontend,
        backend: &Backend,
        (server, guard, moved): (&Server, ActiveGuard, bool),
        log: &HttpLog,
        stick: Option<StickHold>,
        counted: Option<crate::state::FrontendConnection>,
    ) -> Self {
        let stream = (context.protocol == Protocol::Http2).then(|| context.activity.hold_stream());
        let timers = frontend.websocket_timers;
        let lifetime = timers
            .max_lifetime
            .and_then(|_| timers.lifetime(lifetime_draw()))
            .map(|limit| tunnel::Lifetime {
                limit,
                frontend: frontend.state.clone(),
            });
        Self {
            holds: TunnelHolds {
                token: context.shared.open.enter(),
                frontend_connection: counted.unwrap_or_else(|| context.counted.still_open()),
                client: log.client,
                request_id: log.request_id,
                frontend: frontend.name.clone(),
                backend: backend.name.clone(),
                server: server.name.clone(),
                access: log.access.clone(),
                guard,
                seldom: stick.map(|stick| {
                    Box::new(Seldom {
                        stick: Some(stick),
                        trace: None,
                    })
                }),
                stream,
            },
            moved,
            idle: backend.tunnel_timeout,
            limits: frontend.websocket_limits,
            max_messages: frontend.websocket_max_messages.map(|rate| tunnel::MessageRate {
                rate,
                frontend: frontend.state.clone(),
            }),
            timers,
            lifetime,
            engine: TunnelEngine::Epoll,
        }
    }

    /// The tunnel's bytes go through `engine` where it can carry them.
    pub(super) fn carried_by(mut self, engine: TunnelEngine) -> Self {
        self.engine = engine;
        self
    }

    /// The tunnel continues the handshake's trace, if it is traced.
    pub(super) fn traced(mut self, handshake: Option<&RequestSpan>) -> Self {
        if let Some(span) = handshake {
            self.holds.seldom.get_or_insert_with(Box::default).trace = Some(span.tunnel());
        }
        self
    }

    /// Waits for both sides to switch protocols, then hands the sockets to
    /// a task of their own that carries the tunnel (so the long-lived task
    /// holds only what a tunnel needs, not this wait's state).
    pub(super) async fn run(self, client: OnUpgrade, server: OnUpgrade) {
        let (client, server) = match tokio::try_join!(client, server) {
            Ok(both) => both,
            Err(err) => {
                tracing::debug!(request_id = %self.holds.request_id, cause = %err, "upgrade did not complete");
                return;
            }
        };
        let state = self.holds.guard.state().clone();
        state.tunnels.fetch_add(1, Ordering::Relaxed);
        // Server down, drain and shutdown ask through this registration.
        let registration = state.register_tunnel(self.moved);
        let settings = tunnel::Settings {
            idle: self.idle,
            close: registration.control().clone(),
            traffic: state.traffic.clone(),
            client_limits: self.limits,
            max_messages: self.max_messages,
            timers: self.timers,
            lifetime: self.lifetime,
        };
        let carried = CarriedBy {
            holds: self.holds,
            registration,
            started: Moment::now(),
        };
        // The usual case: pump between the raw sockets, no extra layers. The
        // layered fallback keeps any other transport working.
        let client = client
            .downcast::<TokioIo<WatchedIo<ClientStream>>>()
            .map(|p| (p.io.into_inner().into_inner(), p.read_buf));
        let server = server
            .downcast::<TokioIo<UpstreamStream>>()
            .map(|p| (p.io.into_inner(), p.read_buf));
        match (client, server) {
            (Ok((c, c_buf)), Ok((s, s_buf))) => match carrier(self.engine, c, s) {
                #[cfg(target_os = "linux")]
                Carrier::Ring(c, s) => carried.spawn(tunnel::run(c, c_buf, s, s_buf, settings)),
                Carrier::Epoll(c, s) => carried.spawn(tunnel::run(c, c_buf, s, s_buf, settings)),
                Carrier::Failed(err) => {
                    tracing::warn!(request_id = %carried.holds.request_id, cause = %err, "a tunnel's sockets could not move to io_uring");
                    carried.finish(tunnel::TunnelEnd::never_started(err));
                }
            },
            (Ok((c, c_buf)), Err(s)) => carried.spawn(tunnel::run(c, c_buf, TokioIo::new(s), Bytes::new(), settings)),
            (Err(c), Ok((s, s_buf))) => carried.spawn(tunnel::run(TokioIo::new(c), Bytes::new(), s, s_buf, settings)),
            (Err(c), Err(s)) => {
                let (c, s) = (TokioIo::new(c), TokioIo::new(s));
                carried.spawn(tunnel::run(c, Bytes::new(), s, Bytes::new(), settings))
            }
        }
    }
}

/// What carries a tunnel between two unlayered sockets.
enum Carrier {
    /// This worker's io_uring.
    #[cfg(target_os = "linux")]
    Ring(RingStream, RingStream),
    /// tokio's reactor.
    Epoll(ClientStream, UpstreamStream),
    /// The sockets were lost on the way to the ring.
    Failed(std::io::Error),
}

#[cfg(target_os = "linux")]
thread_local! {
    /// This worker's kernel refused io_uring once: its tunnels stay on epoll.
    static RING_REFUSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Both sockets on this worker's io_uring when `engine` asks for it and
/// both are plain TCP; otherwise (TLS on either side, or a kernel that
/// refuses io_uring, logged once per worker) on epoll as they were.
#[cfg(target_os = "linux")]
fn carrier(engine: TunnelEngine, client: ClientStream, server: UpstreamStream) -> Carrier {
    use crate::tls::MaybeTls;
    // A ring belongs to one thread: a runtime that moves tasks between
    // threads (a library user's, or a test's) keeps its tunnels on epoll.
    let single_threaded =
        || tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread;
    if engine != TunnelEngine::IoUring || RING_REFUSED.get() || !single_threaded() {
        return Carrier::Epoll(client, server);
    }
    let (client, server) = match (client, server) {
        (MaybeTls::Plain(client), MaybeTls::Plain(server)) => (client, server),
        (client, server) => return Carrier::Epoll(client, server),
    };
    if let Err(err) = crate::uring::start_on_this_thread() {
        RING_REFUSED.set(true);
        tracing::warn!(cause = %err, "tunnel.engine = \"io_uring\": this worker cannot use io_uring, its tunnels stay on epoll");
        return Carrier::Epoll(MaybeTls::Plain(client), MaybeTls::Plain(server));
    }
    let adopt = |socket: tokio::net::TcpStream| socket.into_std().and_then(RingStream::adopt);
    match (adopt(client), adopt(server)) {
        (Ok(client), Ok(server)) => Carrier::Ring(client, server),
        (Err(err), _) | (_, Err(err)) => Carrier::Failed(err),
    }
}

/// Without io_uring (not Linux), every tunnel is on epoll.
#[cfg(not(target_os = "linux"))]
fn carrier(_engine: TunnelEngine, client: ClientStream, server: UpstreamStream) -> Carrier {
    Carrier::Epoll(client, server)
}

/// A draw in [0, 1) placing one tunnel's lifetime within the jitter: spread
/// is all it needs, not unpredictability.
fn lifetime_draw() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    static DRAWS: OnceLock<AtomicSplitMix64> = OnceLock::new();
    let draws = DRAWS.get_or_init(|| AtomicSplitMix64::new(RandomState::new().hash_one(0x11fe_u64)));
    unit_of(draws.next_u64())
}

/// An open tunnel's holdings, its registration and its start.
struct CarriedBy {
    holds: TunnelHolds,
    /// The tunnel's entry in its server's registry (drain and shutdown reach it there).
    registration: crate::ws::control::TunnelRegistration,
    /// When the tunnel opened (8 bytes where an `Instant` takes 16: see `footprint`).
    started: Moment,
}

impl CarriedBy {
    /// Runs `tunnel` as its own task, then settles the counts and logs the line.
    fn spawn<C, S>(self, tunnel: tunnel::Tunnel<C, S>)
    where
        C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        tokio::spawn(Carry {
            tunnel,
            carried: Some(self),
        });
    }

    /// The tunnel ended: counts, histogram and the access-log line.
    fn finish(self, end: tunnel::TunnelEnd) {
        let holds = self.holds;
        let state = holds.guard.state();
        state.tunnels.fetch_sub(1, Ordering::Relaxed);
        let open_for = self.started.elapsed();
        state.tunnel_durations.observe(open_for.as_secs_f64());
        TunnelLog {
            request_id: holds.request_id,
            client: holds.client,
            frontend: &holds.frontend,
            backend: &holds.backend,
            server: &holds.server,
            open_for,
            end: &end,
            access: &holds.access,
            trace_id: holds
                .seldom
                .as_ref()
                .and_then(|seldom| seldom.trace.as_ref())
                .and_then(|trace| trace.trace_id())
                .map(trace_id_number),
            protocol: match holds.stream {
                Some(_) => Protocol::Http2,
                None => Protocol::Http1,
            },
        }
        .emit();
        let seldom = holds.seldom.map(|seldom| *seldom).unwrap_or_default();
        if let Some(trace) = seldom.trace {
            trace.end(TunnelSummary {
                duration: self.started.elapsed(),
                server: &holds.server,
                bytes_in: end.client_to_server,
                bytes_out: end.server_to_client,
                messages_in: end.messages_in,
                messages_out: end.messages_out,
                close_code_in: end.close_code_in,
                close_code_out: end.close_code_out,
                close: &end.reason,
                failed: matches!(
                    end.reason,
                    tunnel::CloseReason::ClientError(_)
                        | tunnel::CloseReason::ServerError(_)
                        | tunnel::CloseReason::ServerLost
                ),
            });
        }
        drop(self.registration);
        // The learned ids that led here start their idle time now.
        drop(seldom.stick);
        drop(holds.guard);
        drop(holds.frontend_connection);
        drop(holds.stream);
        drop(holds.token);
    }
}

pin_project_lite::pin_project! {
    /// The task of one open tunnel: the tunnel and what it holds, nothing more.
    struct Carry<C, S> {
        #[pin]
        tunnel: tunnel::Tunnel<C, S>,
        carried: Option<CarriedBy>,
    }
}

impl<C, S> std::future::Future for Carry<C, S>
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let this = self.project();
        let end = std::task::ready!(this.tunnel.poll(cx));
        if let Some(carried) = this.carried.take() {
            carried.finish(end);
        }
        std::task::Poll::Ready(())
    }
}

#[cfg(test)]
mod footprint {
    /// An idle WebSocket's largest allocation is its tokio task: this future
    /// plus ~100 bytes of task header and trailer, rounded up to 128. At 872
    /// bytes the task took 1,024 (heaptrack); at 768 it takes 896, and 9,000
    /// idle WebSockets measured 1.86 -> 1.66 KiB each. A guard against growing back.
    #[test]
    fn an_open_tunnels_task_future_stays_within_768_bytes() {
        let size = std::mem::size_of::<super::Carry<super::ClientStream, super::UpstreamStream>>();
        assert!(size <= 768, "the tunnel task's future grew to {size} bytes");
    }
}
