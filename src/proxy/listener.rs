//! Accepting client connections and serving each with hyper's HTTP/1 server,
//! under a watchdog that applies the `client` and `http_request` timeouts
//! and the stop signals.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::sleep_until;

use super::client_addr::{is_trusted, read_proxy_header};
use super::conn::{ConnActivity, WatchedIo};
use super::http::{handle, ConnContext};
use super::{Shared, TrackerToken};

/// Accepts connections for frontend `frontend` until the graceful stop begins.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, frontend: usize) {
    let stopping = shared.stop.graceful();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopping => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let token = shared.open.enter();
                    tokio::spawn(serve_connection(stream, peer, shared.clone(), frontend, token));
                }
                Err(err) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(cause = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    mut peer: SocketAddr,
    shared: Arc<Shared>,
    frontend: usize,
    _token: TrackerToken,
) {
    let _ = stream.set_nodelay(true);
    let (client_timeout, head_timeout, expects_proxy_header) = {
        let snapshot = shared.snapshot.load();
        match snapshot.frontends.get(frontend) {
            Some(f) => (
                f.client_timeout,
                f.http_request_timeout,
                f.proxy_protocol && is_trusted(&f.trusted_proxies, peer.ip()),
            ),
            None => return,
        }
    };
    if expects_proxy_header {
        match tokio::time::timeout(head_timeout, read_proxy_header(&mut stream)).await {
            Ok(Ok(Some(client))) => peer = client,
            Ok(Ok(None)) => {}
            Ok(Err(err)) => {
                tracing::warn!(peer = %peer, cause = %err, "PROXY header refused: connection closed");
                return;
            }
            Err(_) => {
                tracing::info!(peer = %peer, "no PROXY header in time: connection closed");
                return;
            }
        }
    }
    let activity = Arc::new(ConnActivity::new());
    let context = Arc::new(ConnContext {
        shared: shared.clone(),
        frontend,
        client: peer,
        activity: activity.clone(),
        https: false,
    });
    let service = service_fn(move |request| handle(context.clone(), request));
    let connection = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(WatchedIo::new(stream, activity.clone())), service)
        .with_upgrades();
    tokio::pin!(connection);
    let graceful = shared.stop.graceful();
    let hard = shared.stop.hard();
    tokio::pin!(graceful, hard);
    let mut draining = false;
    loop {
        let deadline = activity.deadline(client_timeout, head_timeout);
        let timer = async {
            match deadline {
                Some((at, _)) => sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(client = %peer, cause = %err, "client connection ended with an error");
                }
                break;
            }
            _ = timer => {
                if let Some((at, cuts_head)) = activity.deadline(client_timeout, head_timeout) {
                    if at <= std::time::Instant::now() {
                        if cuts_head {
                            tracing::info!(client = %peer, timeout = ?head_timeout, "request head not received in time: connection closed");
                        }
                        break;
                    }
                }
            }
            _ = activity.phase_changed() => {}
            _ = &mut graceful, if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = &mut hard => break,
        }
    }
}
