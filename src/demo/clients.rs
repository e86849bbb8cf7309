//! The demo's simulated users: WebSocket clients inside the demo process
//! that connect through tether, keep the sticky cookie tether gives them,
//! and reconnect with it whenever their connection is closed (a killed
//! server, a drain). Each user stays a while, then leaves and a new one
//! (without a cookie) comes, so new servers fill up as on a real site.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::header;
use tokio::sync::watch;
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::util::mix::SplitMix64;

/// How the simulated users behave.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// How many users are online at any time.
    pub count: usize,
    /// Shortest stay of one user; each stay is drawn between this and `stay_max`.
    pub stay_min: Duration,
    /// Longest stay of one user.
    pub stay_max: Duration,
    /// Time between two messages a connected user sends (echoed back).
    pub message_every: Duration,
}

/// Live counts of the simulated users, for the demo page.
#[derive(Debug, Default)]
pub struct Counts {
    /// Users with an open WebSocket right now.
    pub connected: AtomicUsize,
    /// Handshakes that got a 101.
    pub handshakes: AtomicU64,
    /// Handshakes that failed (refused, an error status, a timeout).
    pub failed: AtomicU64,
    /// Connections closed under a user who had not left (kill, drain):
    /// each was followed by a reconnect carrying the user's cookie.
    pub reconnects: AtomicU64,
}

/// Starts `behaviour.count` users against `frontend`; they stop (closing
/// their connections) when `stop` turns `true` or its sender is dropped.
pub fn start(frontend: SocketAddr, behaviour: Behaviour, stop: watch::Receiver<bool>) -> Arc<Counts> {
    let counts = Arc::new(Counts::default());
    for index in 0..behaviour.count {
        let counts = counts.clone();
        let behaviour = behaviour.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                () = user_after_user(frontend, index as u64, &behaviour, &counts) => {}
            }
        });
    }
    counts
}

/// One slot of the simulation: a user comes, stays, leaves; the next comes.
async fn user_after_user(frontend: SocketAddr, index: u64, behaviour: &Behaviour, counts: &Counts) {
    let seed = crate::util::clock::unix_ms() ^ index.wrapping_mul(0x9e37_79b9);
    let mut random = SplitMix64::new(seed);
    // Arrivals are spread over the first half second, not all at once.
    sleep(Duration::from_millis(random.below(500) as u64)).await;
    loop {
        let span = behaviour.stay_max.saturating_sub(behaviour.stay_min);
        let stay = behaviour.stay_min + span.mul_f64(random.next_unit());
        one_user(frontend, Instant::now() + stay, behaviour, counts, &mut random).await;
    }
}

/// One user until `leaves`: connects, and reconnects with its cookie each
/// time its connection is closed under it.
async fn one_user(
    frontend: SocketAddr,
    leaves: Instant,
    behaviour: &Behaviour,
    counts: &Counts,
    random: &mut SplitMix64,
) {
    let mut cookie: Option<String> = None;
    let mut first = true;
    while Instant::now() < leaves {
        if !first {
            counts.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        match connect(frontend, cookie.as_deref()).await {
            Ok((ws, set_cookie)) => {
                counts.handshakes.fetch_add(1, Ordering::Relaxed);
                if set_cookie.is_some() {
                    cookie = set_cookie;
                }
                counts.connected.fetch_add(1, Ordering::Relaxed);
                let left = converse(ws, leaves, behaviour.message_every).await;
                counts.connected.fetch_sub(1, Ordering::Relaxed);
                if left {
                    return;
                }
            }
            Err(()) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Like a browser's reconnect logic: a short, random pause.
        sleep(Duration::from_millis(100 + random.below(300) as u64)).await;
    }
}

type Stream = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A WebSocket handshake through tether with the user's cookie; returns the
/// stream and the `NAME=value` of a cookie tether set, if it set one.
async fn connect(frontend: SocketAddr, cookie: Option<&str>) -> Result<(Stream, Option<String>), ()> {
    let mut request = format!("ws://{frontend}/ws").into_client_request().map_err(drop)?;
    if let Some(value) = cookie.and_then(|c| header::HeaderValue::from_str(c).ok()) {
        request.headers_mut().insert(header::COOKIE, value);
    }
    let handshake = async {
        let stream = tokio::net::TcpStream::connect(frontend).await.map_err(drop)?;
        tokio_tungstenite::client_async(request, stream).await.map_err(drop)
    };
    let (ws, response) = timeout(Duration::from_secs(5), handshake).await.map_err(drop)??;
    let set_cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string);
    Ok((ws, set_cookie))
}

/// Reads (and now and then sends) until the connection is closed under the
/// user (false) or the user leaves (true, after closing it).
async fn converse(mut ws: Stream, leaves: Instant, message_every: Duration) -> bool {
    let mut next_message = Instant::now() + message_every;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(leaves) => {
                let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
                return true;
            }
            () = tokio::time::sleep_until(next_message) => {
                next_message += message_every;
                if ws.send(Message::text("hello")).await.is_err() {
                    return false;
                }
            }
            message = ws.next() => match message {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return false,
                Some(Ok(_)) => {}
            },
        }
    }
}
