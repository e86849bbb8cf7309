//! What every request on one client connection shares, set up by the
//! listener when the connection is accepted.

use std::net::SocketAddr;
use std::sync::Arc;

use super::conn::ConnActivity;
use super::Shared;
use crate::state::FrontendConnection;

/// What every request on one client connection shares.
pub struct ConnContext {
    /// The instance's shared state.
    pub shared: Arc<Shared>,
    /// Name of the frontend that accepted the connection (looked up in each
    /// request's snapshot, so reloads that reorder frontends are harmless).
    pub frontend: Arc<str>,
    /// The client's address.
    pub client: SocketAddr,
    /// The address the client reached (tether's end of the connection): the
    /// `Host` of an HTTP/1.0 request that sent none.
    pub local: SocketAddr,
    /// The connection's phase tracker (for its timeouts).
    pub activity: Arc<ConnActivity>,
    /// Whether the client connection is TLS (for `X-Forwarded-Proto`).
    pub https: bool,
    /// Keeps the connection counted in its frontend (and for its address).
    pub counted: FrontendConnection,
    /// HTTP/1.1 or HTTP/2: an HTTP/2 connection carries many requests and
    /// tunnels at once, each on its own stream.
    pub protocol: super::log::Protocol,
}
