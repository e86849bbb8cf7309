//! Upstream connections: TCP connect with a timeout, the HTTP/1 client
//! handshake, and a small per-server pool of idle keep-alive connections.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::Poll;
use std::time::Duration;

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::body::RequestBody;
use crate::proxy_header::{self, ProxyVersion};
use crate::state::ServerState;
use crate::tls::{UpstreamStream, UpstreamTls};
use crate::util::lock;
use crate::util::lock::{read, write};
use crate::util::mix::GOLDEN_GAMMA;

/// A ready-to-use HTTP/1 connection to one server.
pub type UpstreamSender = SendRequest<RequestBody>;

/// How many idle connections one server keeps at most.
const MAX_IDLE_PER_SERVER: usize = 128;
/// How long a pooled connection may take to become ready before it is dropped.
const READY_WAIT: Duration = Duration::from_secs(1);

/// Why a connection to a server could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect did not finish within the backend's `connect` timeout.
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    /// The TCP connect failed (refused, unreachable, …).
    #[error("connect failed: {0}")]
    Io(#[from] io::Error),
    /// The TLS handshake with the server failed (certificate not trusted,
    /// wrong name, server not speaking TLS) or timed out.
    #[error("{0}")]
    Tls(io::Error),
    /// The HTTP/1 client could not start on the connection.
    #[error("HTTP handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}

/// The idle keep-alive connections of every server, by the server state's
/// id: the proxy owns its pools; a server's live state holds none.
#[derive(Debug, Default)]
pub struct Pools {
    /// Read on every request that may reuse a connection; written when a
    /// server is first used or forgotten.
    by_server: RwLock<HashMap<u64, Arc<Pool>, BuildHasherDefault<IdHasher>>>,
}

/// Hashes a server id (a process-wide counter, never chosen by a peer) with
/// one multiplication instead of SipHash: SipHash cost about 150
/// instructions per request here (callgrind), this one a handful.
#[derive(Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(*byte));
        }
    }

    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing: the high bits, which the table reads, depend on every bit of the id.
        self.0 = id.wrapping_mul(GOLDEN_GAMMA);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Pools {
    /// The pool of `server`, made on first use.
    pub fn of(&self, server: &ServerState) -> Arc<Pool> {
        if let Some(pool) = read(&self.by_server).get(&server.id()) {
            return pool.clone();
        }
        write(&self.by_server).entry(server.id()).or_default().clone()
    }

    /// Closes the idle connections of `server` (a reload changed how it is reached).
    pub fn clear(&self, server: &ServerState) {
        if let Some(pool) = read(&self.by_server).get(&server.id()) {
            pool.clear();
        }
    }

    /// Drops the pool of a server that is gone (a reload removed it).
    pub fn forget(&self, server: &ServerState) {
        write(&self.by_server).remove(&server.id());
    }
}

/// Idle keep-alive connections to one server, most recently used last, each
/// with the worker whose runtime drives it: a worker takes only its own, so
/// a request never crosses threads (see [`crate::workers`]).
#[derive(Debug, Default)]
pub struct Pool {
    /// A plain mutex: it is held for a push or a pop, once per request, never across an await.
    idle: Mutex<Vec<(usize, UpstreamSender)>>,
}

impl Pool {
    /// An idle connection of this worker that is still open and ready, if there is one.
    pub async fn take(&self) -> Option<UpstreamSender> {
        let worker = crate::workers::current_index();
        loop {
            let mut sender = self.pop_for(worker)?;
            if sender.is_closed() {
                continue;
            }
            // A connection is put back when its last response body ended; the
            // client task may need a moment to mark it idle again.
            match tokio::time::timeout(READY_WAIT, sender.ready()).await {
                Ok(Ok(())) => return Some(sender),
                _ => continue,
            }
        }
    }

    /// Returns a connection whose exchange completed.
    pub fn put(&self, sender: UpstreamSender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE_PER_SERVER {
            idle.push((crate::workers::current_index(), sender));
        }
    }

    /// The most recently returned connection of `worker` (usually the last one).
    fn pop_for(&self, worker: usize) -> Option<UpstreamSender> {
        let mut idle = self.lock();
        let at = idle.iter().rposition(|(owner, _)| *owner == worker)?;
        Some(idle.remove(at).1)
    }

    /// Closes every idle connection (a reload changed how the server is reached).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Number of idle connections (for stats and tests).
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(usize, UpstreamSender)>> {
        lock(&self.idle)
    }
}

/// Opens a TCP connection to `address` within `timeout`, with Nagle off.
pub async fn connect(address: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| ConnectError::Timeout(timeout))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Whom a connection to a server is made for: what a PROXY header toward
/// it names (`send_proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddrs {
    /// The client as tether determined it (the peer, a trusted PROXY
    /// header's client, or the client a trusted proxy's `X-Forwarded-For` names).
    pub client: SocketAddr,
    /// The frontend address the client reached.
    pub reached: SocketAddr,
}

/// Opens a connection to `address` within `timeout`; with `send_proxy`,
/// writes the PROXY header naming `whom` right after the TCP connect (so
/// before TLS); then, with `tls`, starts TLS on it (the handshake gets its
/// own `timeout`).
pub async fn connect_stream(
    address: SocketAddr,
    timeout: Duration,
    tls: Option<&UpstreamTls>,
    send_proxy: Option<ProxyVersion>,
    whom: ClientAddrs,
) -> Result<UpstreamStream, ConnectError> {
    let mut stream = connect(address, timeout).await?;
    if let Some(version) = send_proxy {
        let header = proxy_header::encode(version, whom.client, whom.reached);
        tokio::time::timeout(timeout, stream.write_all(&header))
            .await
            .map_err(|_| ConnectError::Timeout(timeout))??;
    }
    UpstreamTls::maybe_start(tls, stream, timeout)
        .await
        .map_err(ConnectError::Tls)
}

/// The HTTP/1 connection of a WebSocket handshake to a server, run by the
/// client connection's task while it waits for the response (see [`along`])
/// rather than by a task of its own: no spawn, no hop between two tasks.
/// (hyper's `UpgradeableConnection`, which cannot be named outside hyper.)
pub type UpstreamConnection = dyn Future<Output = hyper::Result<()>> + Send;

/// Starts an HTTP/1 client on `stream`. A plain connection runs in a task
/// of its own; with `upgrades` (a WebSocket handshake's, which may be handed
/// over to a tunnel after a 101) it is returned for the caller to drive.
pub async fn handshake(
    stream: UpstreamStream,
    upgrades: bool,
) -> Result<(UpstreamSender, Option<Pin<Box<UpstreamConnection>>>), ConnectError> {
    // One `send` per write rather than `writev` of head and body, as HAProxy
    // and NGINX write (hyper copies body chunks into its buffer: cheap next
    // to the syscall; docs/benchmarks.md has the before and after).
    let (sender, connection) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await?;
    if upgrades {
        return Ok((sender, Some(Box::pin(connection.with_upgrades()))));
    }
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(cause = %err, "upstream connection ended with an error");
        }
    });
    Ok((sender, None))
}

/// Awaits `response` (a request sent on `connection`'s sender) while
/// driving `connection` in the same task. After a 101 the connection ends
/// in the poll that reads the head, handing its socket to the upgrade;
/// returns the connection too when it has more to do (a response body to
/// stream, a request body to finish): run it apart then ([`run_apart`]).
pub async fn along<F: Future>(
    connection: Pin<Box<UpstreamConnection>>,
    response: F,
) -> (F::Output, Option<Pin<Box<UpstreamConnection>>>) {
    let mut connection = Some(connection);
    let mut response = std::pin::pin!(response);
    let output = std::future::poll_fn(|cx| {
        // The connection first: it reads the head that readies the response.
        if let Some(running) = connection.as_mut() {
            if let Poll::Ready(ended) = running.as_mut().poll(cx) {
                connection = None;
                if let Err(err) = ended {
                    tracing::debug!(cause = %err, "upstream connection ended with an error");
                }
            }
        }
        response.as_mut().poll(cx)
    })
    .await;
    (output, connection)
}

/// Runs the rest of a handshake's connection in a task of its own (see [`along`]).
pub fn run_apart(connection: Pin<Box<UpstreamConnection>>) {
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(cause = %err, "upstream connection ended with an error");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_server_has_one_pool_until_it_is_forgotten() {
        let pools = Pools::default();
        let (a, b) = (ServerState::new(1), ServerState::new(1));
        let first = pools.of(&a);
        assert!(Arc::ptr_eq(&first, &pools.of(&a)), "the same server, the same pool");
        assert!(!Arc::ptr_eq(&first, &pools.of(&b)), "another server, another pool");
        pools.forget(&a);
        assert!(!Arc::ptr_eq(&first, &pools.of(&a)), "a forgotten server starts afresh");
    }

    #[test]
    fn server_ids_spread_over_the_high_bits() {
        let hash = |id: u64| {
            let mut hasher = IdHasher::default();
            hasher.write_u64(id);
            hasher.finish() >> 57
        };
        let tags: std::collections::HashSet<u64> = (0..64).map(hash).collect();
        assert!(
            tags.len() > 32,
            "consecutive ids get distinct top-7-bit tags: {}",
            tags.len()
        );
    }
}
