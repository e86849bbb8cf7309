//! Choosing the server for a request and connecting to it: stickiness first,
//! then the balancing algorithm over the servers that are up and have room,
//! waiting in the backend's queue when all are full, and moving on to
//! another server when a connect fails, at most `retries` times.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::Request;

use super::error::{ConnectFailure, ProxyError};
use super::log::RequestId;
use super::pool::{self, ClientAddrs, Pool, UpstreamConnection, UpstreamSender};
use super::Shared;
use crate::balance::{Candidates, RequestKey, ServerId};
use crate::snapshot::{Backend, Server};
use crate::state::{ActiveGuard, AdminState, Changes};
use crate::sticky::table::StickHold;
use crate::sticky::{Lookup, SidLearner, StickyPolicy, StuckMaxconn};

/// A connection to the chosen server, with the slot held on it.
pub(super) struct Upstream {
    /// The server connected to.
    pub(super) server: ServerId,
    /// Its slot, held until the response ends (or the tunnel closes).
    pub(super) guard: ActiveGuard,
    /// The connection.
    pub(super) sender: UpstreamSender,
    /// A WebSocket handshake's connection, for the client's task to drive
    /// until the response (`None`: it runs in a task of its own).
    pub(super) connection: Option<std::pin::Pin<Box<UpstreamConnection>>>,
    /// Taken from the pool (it may turn out to be closed by the server).
    pub(super) reused: bool,
    /// The server's pool, where the connection goes back after a clean
    /// exchange (`None` for a WebSocket handshake).
    pub(super) pool: Option<Arc<Pool>>,
    /// The client was stuck to a server that rebalancing sheds from, and
    /// was balanced elsewhere instead: its tunnel is never shed again.
    pub(super) moved: bool,
    /// Connects that failed before this one (other servers tried).
    pub(super) retries: u32,
}

/// What stickiness said about a request: its backend's policy and the
/// lookup, kept until the response so the cookie is set and ids learned.
pub(super) struct Stickiness<'a> {
    /// The backend's policy.
    pub(super) policy: &'a StickyPolicy,
    /// What the request carried.
    lookup: Lookup,
}

impl<'a> Stickiness<'a> {
    /// Looks `request` up in `backend`'s policy, if it has one (a cluster's
    /// shared table may need one bounded Redis lookup first).
    pub(super) async fn of<B>(backend: &'a Backend, request: &Request<B>) -> Option<Self> {
        let policy = backend.sticky.as_ref()?;
        policy.fetch_shared(request).await;
        Some(Self {
            policy,
            lookup: policy.lookup(request, &backend.server_index),
        })
    }

    /// Whether the request names a live session the table knows (an
    /// Engine.IO `sid`, a learned id): it must reach the server holding that
    /// session whatever rebalancing wants, or the session breaks. Requests
    /// that start a session (a cookie only) are the ones rebalancing moves.
    fn names_a_session(&self) -> bool {
        !self.lookup.known_ids.is_empty() || self.lookup.table_target.is_some()
    }

    /// The server the client is stuck to, if any.
    fn stuck(&self) -> Option<(&StickyPolicy, ServerId)> {
        Some((self.policy, self.lookup.target?))
    }

    /// Applies stickiness to `server`'s response headers; returns a learner
    /// for the body of an Engine.IO handshake.
    pub(super) fn on_response(
        &self,
        headers: &mut http::HeaderMap,
        server: ServerId,
        server_name: &std::sync::Arc<str>,
        https: bool,
    ) -> Option<SidLearner> {
        self.policy
            .on_response(headers, server, server_name, &self.lookup, https)
    }

    /// Applies stickiness to the 101 of `server`; returns the hold on the
    /// learned ids that lead to it, for the tunnel to keep while it lives.
    pub(super) fn on_switch(
        &self,
        headers: &mut http::HeaderMap,
        server: ServerId,
        server_name: &std::sync::Arc<str>,
        https: bool,
    ) -> Option<StickHold> {
        self.policy.on_switch(headers, server, server_name, &self.lookup, https)
    }
}

/// Connects a request to a server of `backend`: the one it is stuck to
/// first, then the algorithm's choice with retries elsewhere.
pub(super) async fn connect(
    backend: &Backend,
    key: &RequestKey<'_>,
    websocket: bool,
    whom: ClientAddrs,
    sticky: Option<&Stickiness<'_>>,
    request_id: RequestId,
    shared: &Shared,
) -> Result<Upstream, ProxyError> {
    let attempt = Attempt {
        backend,
        websocket,
        whom,
        request_id,
        shared,
    };
    let mut tries = Tries::default();
    if let Some((policy, id)) = sticky.and_then(Stickiness::stuck) {
        let in_a_session = sticky.is_some_and(Stickiness::names_a_session);
        if !in_a_session && backend.rebalance_state.redispatches_from(&backend.servers[id].state) {
            // Rebalancing sheds from that server: like a full `maxconn`, the
            // client is balanced elsewhere (and re-pinned by the response).
            let mut elsewhere = Tries {
                tried: vec![id],
                last: None,
                failures: 0,
            };
            if let Ok(mut upstream) = attempt.balanced(key, &mut elsewhere).await {
                upstream.moved = true;
                return Ok(upstream);
            }
        }
        if let Some(done) = attempt.stuck(policy, id, &mut tries).await {
            return done;
        }
    }
    attempt.balanced(key, &mut tries).await
}

/// Connects a WebSocket handshake that `failed` dropped unanswered to
/// another server, balanced without a key (the handshake is sent again).
pub(super) async fn connect_elsewhere(
    backend: &Backend,
    failed: ServerId,
    whom: ClientAddrs,
    request_id: RequestId,
    shared: &Shared,
) -> Result<Upstream, ProxyError> {
    let attempt = Attempt {
        backend,
        websocket: true,
        whom,
        request_id,
        shared,
    };
    let mut tries = Tries {
        tried: vec![failed],
        last: None,
        failures: 0,
    };
    attempt.balanced(&RequestKey::default(), &mut tries).await
}

/// The servers tried so far for one request and why the last one failed.
#[derive(Default)]
struct Tries {
    /// Servers whose connect failed (or that are excluded): not picked again.
    tried: Vec<ServerId>,
    /// The last failed connect, for the client's 502.
    last: Option<Box<ConnectFailure>>,
    /// Connects that failed (`tried` also holds servers only excluded).
    failures: u32,
}

impl Tries {
    /// Whether the failures used up the backend's `retries` (the first try is not a retry).
    fn exhausted(&self, retries: u32) -> bool {
        self.tried.len() > retries as usize
    }

    /// The 502 once nothing more will be tried.
    fn all_failed(&mut self, backend: &Backend) -> ProxyError {
        ProxyError::AllFailed {
            backend: backend.name.clone(),
            last: self.last.take(),
        }
    }
}

/// What to do when the algorithm has no server to offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NothingPicked {
    /// Servers were tried and failed: 502.
    AllFailed,
    /// No server could take the request at all: 503.
    NoServer,
    /// Servers are only full: wait in the queue for a slot.
    Queue,
}

/// Decides what no pick means, from whether servers were tried already
/// and whether some would take the request but for `maxconn`.
fn nothing_picked(tried_any: bool, only_full: bool) -> NothingPicked {
    if tried_any {
        NothingPicked::AllFailed
    } else if only_full {
        NothingPicked::Queue
    } else {
        NothingPicked::NoServer
    }
}

/// Whether a client stuck to a server in `admin` state may go there, the
/// server being `up` or not (a draining server takes them with `drain_sticky`).
fn stuck_admitted(up: bool, admin: AdminState, drain_sticky: bool) -> bool {
    up && match admin {
        AdminState::Ready => true,
        AdminState::Drain => drain_sticky,
        AdminState::Maint => false,
    }
}

/// One request's connect attempts.
struct Attempt<'a> {
    backend: &'a Backend,
    websocket: bool,
    /// The client the connections are for (a `send_proxy` server is told).
    whom: ClientAddrs,
    request_id: RequestId,
    /// Where passive detection flips a server down, and the pools.
    shared: &'a Shared,
}

impl Attempt<'_> {
    /// The server the client is stuck to, `id`: connected, refused (it is
    /// unavailable or failed and the policy does not redispatch), or `None`
    /// to balance normally.
    async fn stuck(
        &self,
        policy: &StickyPolicy,
        id: ServerId,
        tries: &mut Tries,
    ) -> Option<Result<Upstream, ProxyError>> {
        let server = &self.backend.servers[id];
        if server.leaving {
            // Deleted through the API: like a server removed by a reload, it
            // takes nobody back; the client is balanced and re-pinned.
            return None;
        }
        if server.state.admin() == AdminState::Drain && !server.state.takes_stuck_clients() {
            // The drain's deadline passed: the client is not stuck to it any
            // more, it is balanced (and its cookie or learned id re-pointed).
            return None;
        }
        let admitted = stuck_admitted(server.state.is_up(), server.state.admin(), self.backend.drain_sticky);
        let guard = admitted
            .then(|| server.state.try_acquire(policy.stuck_maxconn.limit(server.maxconn)))
            .flatten();
        match guard {
            Some(guard) => match self.connect(id, guard, tries).await {
                Some(upstream) => Some(Ok(upstream)),
                None if !policy.redispatch => Some(Err(tries.all_failed(self.backend))),
                None => None,
            },
            // Past maxconn by more than the margin: balanced elsewhere and re-pinned.
            None if admitted && matches!(policy.stuck_maxconn, StuckMaxconn::Margin(_)) => None,
            None if !policy.redispatch => Some(Err(ProxyError::StuckUnavailable {
                backend: self.backend.name.clone(),
                server: server.name.clone(),
            })),
            None => None,
        }
    }

    /// The algorithm's choice, skipping servers in `tries`, waiting in the
    /// queue while all are full, retrying elsewhere after a failed connect.
    async fn balanced(&self, key: &RequestKey<'_>, tries: &mut Tries) -> Result<Upstream, ProxyError> {
        let backend = self.backend;
        let queue_deadline = tokio::time::Instant::now() + backend.queue_timeout;
        loop {
            let Some((id, guard)) = pick(backend, key, &tries.tried) else {
                match nothing_picked(!tries.tried.is_empty(), only_full(backend)) {
                    NothingPicked::AllFailed => return Err(tries.all_failed(backend)),
                    NothingPicked::NoServer => {
                        return Err(ProxyError::NoServer {
                            backend: backend.name.clone(),
                        })
                    }
                    NothingPicked::Queue if wait_for_slot(backend, key, queue_deadline).await => continue,
                    NothingPicked::Queue => {
                        return Err(ProxyError::QueueTimeout {
                            backend: backend.name.clone(),
                            waited: backend.queue_timeout,
                        })
                    }
                }
            };
            if let Some(upstream) = self.connect(id, guard, tries).await {
                return Ok(upstream);
            }
            if tries.exhausted(backend.retries) {
                return Err(tries.all_failed(backend));
            }
        }
    }

    /// Connects to server `id` (holding its slot `guard`); a failure is
    /// counted, logged, and recorded in `tries`.
    async fn connect(&self, id: ServerId, guard: ActiveGuard, tries: &mut Tries) -> Option<Upstream> {
        let server = &self.backend.servers[id];
        // A connection announcing its client in a PROXY header is that client's alone: never pooled.
        let pool = (!self.websocket && server.send_proxy.is_none()).then(|| self.shared.pools.of(&server.state));
        match connection_to(server, self.backend, pool.as_deref(), self.websocket, self.whom).await {
            Ok(((sender, connection), reused)) => Some(Upstream {
                server: id,
                guard,
                sender,
                connection,
                reused,
                pool,
                moved: false,
                retries: tries.failures,
            }),
            Err(err) => {
                let failure = connect_failed(self.backend, server, err, self.request_id, &self.shared.changes);
                tries.last = Some(Box::new(failure));
                tries.tried.push(id);
                tries.failures += 1;
                None
            }
        }
    }
}

/// Whether the backend has servers that could take the request but for
/// `maxconn` (then a request may queue rather than fail).
fn only_full(backend: &Backend) -> bool {
    backend
        .servers
        .iter()
        .any(|s| s.state.is_up() && s.state.admin() == AdminState::Ready && s.state.weight() > 0 && s.maxconn.is_some())
}

/// Waits in the backend's queue until a slot frees on some server and the
/// algorithm can pick again, or `deadline` passes (false).
async fn wait_for_slot(backend: &Backend, key: &RequestKey<'_>, deadline: tokio::time::Instant) -> bool {
    /// Counts this request in `Backend::queued` while it waits.
    struct Queued<'a>(&'a std::sync::atomic::AtomicU32);
    impl Drop for Queued<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    /// Records how long the request waited, however the wait ends.
    struct Waited<'a>(&'a crate::state::latency::Latency, tokio::time::Instant);
    impl Drop for Waited<'_> {
        fn drop(&mut self) {
            self.0.observe(self.1.elapsed());
        }
    }
    backend.queued.fetch_add(1, Ordering::Relaxed);
    let _queued = Queued(&backend.queued);
    let _waited = Waited(&backend.queue_waits, tokio::time::Instant::now());
    loop {
        // Register on every server before looking again, so no release is missed.
        let mut waits: Vec<_> = backend.servers.iter().map(|s| Box::pin(s.state.slot_freed())).collect();
        for wait in &mut waits {
            wait.as_mut().enable();
        }
        if backend
            .balancer
            .pick(&Candidates::new(&backend.candidates, &[]), key)
            .is_some()
        {
            return true;
        }
        if tokio::time::timeout_at(deadline, futures_util::future::select_all(waits))
            .await
            .is_err()
        {
            return false;
        }
    }
}

/// A keep-alive connection to `server` from its `pool` (plain HTTP only:
/// WebSocket handshakes and `send_proxy` servers have none), or a new one. The flag says whether it
/// came from the pool.
async fn connection_to(
    server: &Server,
    backend: &Backend,
    pool: Option<&Pool>,
    websocket: bool,
    whom: ClientAddrs,
) -> Result<(Opened, bool), pool::ConnectError> {
    if let Some(pool) = pool {
        if let Some(sender) = pool.take().await {
            return Ok(((sender, None), true));
        }
    }
    let opened = open(server, backend, websocket, whom).await?;
    // Clears passive failures counted against the server (one atomic load when there are none).
    server.state.connect_succeeded();
    Ok((opened, false))
}

/// Counts and logs a failed connect; returns it for the client's error.
fn connect_failed(
    backend: &Backend,
    server: &Server,
    err: pool::ConnectError,
    request_id: RequestId,
    changes: &Changes,
) -> ConnectFailure {
    server.state.connect_failures.fetch_add(1, Ordering::Relaxed);
    if let Some(health) = &backend.health {
        // Passive detection (`observe`): counts toward `fall`, may take the server out now.
        crate::health::connect_failed(
            &backend.name,
            &server.name,
            &server.state,
            health,
            &err.to_string(),
            changes,
        );
    }
    tracing::warn!(
        request_id = %request_id,
        backend = %backend.name,
        server = %server.name,
        cause = %err,
        "connect to server failed"
    );
    ConnectFailure {
        server: server.name.clone(),
        error: err,
    }
}

/// Asks the algorithm for a server and takes a slot on it; a server that
/// filled up in the meantime is skipped.
fn pick(backend: &Backend, key: &RequestKey<'_>, tried: &[ServerId]) -> Option<(ServerId, ActiveGuard)> {
    let mut excluded = tried.to_vec();
    loop {
        let id = backend
            .balancer
            .pick(&Candidates::new(&backend.candidates, &excluded), key)?;
        let server = &backend.servers[id];
        if let Some(guard) = server.state.try_acquire(server.maxconn) {
            return Some((id, guard));
        }
        excluded.push(id);
    }
}

/// A connection's sender, and its connection when the caller drives it (see [`pool::handshake`]).
pub(super) type Opened = (UpstreamSender, Option<std::pin::Pin<Box<UpstreamConnection>>>);

/// A new connection to `server`, ready for requests (`upgrades`: it may
/// switch protocols, and the caller drives it), made for `whom` (named in
/// its PROXY header, if any).
pub(super) async fn open(
    server: &Server,
    backend: &Backend,
    upgrades: bool,
    whom: ClientAddrs,
) -> Result<Opened, pool::ConnectError> {
    let tls = server.tls.as_ref();
    let started = tokio::time::Instant::now();
    let stream = pool::connect_stream(server.address, backend.connect_timeout, tls, server.send_proxy, whom).await?;
    server.state.connect_times.observe(started.elapsed());
    pool::handshake(stream, upgrades).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_pick_after_failures_is_a_502_whatever_the_slots() {
        assert_eq!(nothing_picked(true, true), NothingPicked::AllFailed);
        assert_eq!(nothing_picked(true, false), NothingPicked::AllFailed);
    }

    #[test]
    fn no_pick_before_any_try_queues_only_when_servers_are_just_full() {
        assert_eq!(nothing_picked(false, true), NothingPicked::Queue);
        assert_eq!(nothing_picked(false, false), NothingPicked::NoServer);
    }

    #[test]
    fn retries_count_the_tries_after_the_first() {
        let mut tries = Tries::default();
        tries.tried.push(0);
        assert!(!tries.exhausted(1), "one failure leaves one retry of 1");
        tries.tried.push(1);
        assert!(tries.exhausted(1));
        assert!(Tries {
            tried: vec![0],
            last: None,
            failures: 0,
        }
        .exhausted(0));
    }

    #[test]
    fn a_stuck_client_goes_to_a_ready_server_that_is_up() {
        assert!(stuck_admitted(true, AdminState::Ready, false));
        assert!(!stuck_admitted(false, AdminState::Ready, true));
    }

    #[test]
    fn a_draining_server_takes_stuck_clients_only_with_drain_sticky() {
        assert!(stuck_admitted(true, AdminState::Drain, true));
        assert!(!stuck_admitted(true, AdminState::Drain, false));
    }

    #[test]
    fn a_server_in_maintenance_takes_no_stuck_client() {
        assert!(!stuck_admitted(true, AdminState::Maint, true));
    }
}
