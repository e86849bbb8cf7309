//! A crowd of WebSocket clients that behave like a real app's: each keeps
//! its stickiness cookie, and when its connection is closed it reconnects
//! at once, carrying the cookie. The crowd records which server each client
//! is on (the name the test backend announces), every close it saw and
//! every handshake that failed, so a test can watch the spread move.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use http::header;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// How long one handshake, or the server's first message, may take.
const STEP_LIMIT: Duration = Duration::from_secs(10);

/// One close a client saw.
#[derive(Debug, Clone)]
pub struct Close {
    /// The client's number.
    pub client: usize,
    /// The server it was on.
    pub server: String,
    /// The Close frame's code (`None`: the connection ended without one).
    pub code: Option<u16>,
    /// When (Unix ms).
    pub at_unix_ms: u64,
}

#[derive(Default)]
struct Shared {
    /// The server each client is on now (`None`: between connections).
    on: Mutex<Vec<Option<String>>>,
    closes: Mutex<Vec<Close>>,
    handshakes: AtomicUsize,
    failed: AtomicUsize,
}

/// Reconnecting WebSocket clients; they stop when this drops.
pub struct Clients {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Clients {
    /// Starts `count` clients, client `i` through `addrs[i % addrs.len()]`
    /// on `path`, at most `parallel` handshaking at once at the start, and
    /// waits (up to 30 s) until every one is connected.
    pub async fn connect(addrs: &[SocketAddr], path: &str, count: usize, parallel: usize) -> Clients {
        Self::connect_with(addrs, path, count, parallel, None).await
    }

    /// Like [`Clients::connect`], each client starting with the cookie
    /// `cookie` (`"NAME=value"`), as if it had been stuck to a server before.
    pub async fn connect_with_cookie(
        addrs: &[SocketAddr],
        path: &str,
        count: usize,
        parallel: usize,
        cookie: &str,
    ) -> Clients {
        Self::connect_with(addrs, path, count, parallel, Some(cookie)).await
    }

    async fn connect_with(
        addrs: &[SocketAddr],
        path: &str,
        count: usize,
        parallel: usize,
        cookie: Option<&str>,
    ) -> Clients {
        let shared = Arc::new(Shared {
            on: Mutex::new(vec![None; count]),
            ..Shared::default()
        });
        let gate = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
        let tasks = (0..count)
            .map(|i| {
                let url = format!("ws://{}{path}", addrs[i % addrs.len()]);
                let cookie = cookie.map(str::to_string);
                tokio::spawn(client(i, url, cookie, shared.clone(), gate.clone()))
            })
            .collect();
        let clients = Clients { shared, tasks };
        let started = Instant::now();
        while clients.connected() < count {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "only {} of {count} clients connected",
                clients.connected()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        clients
    }

    /// Clients connected now.
    pub fn connected(&self) -> usize {
        self.shared.on.lock().unwrap().iter().flatten().count()
    }

    /// Connected clients per server name.
    pub fn spread(&self) -> BTreeMap<String, usize> {
        let mut spread = BTreeMap::new();
        for server in self.shared.on.lock().unwrap().iter().flatten() {
            *spread.entry(server.clone()).or_default() += 1;
        }
        spread
    }

    /// When the first close was seen (Unix ms), if any.
    pub fn first_close_unix_ms(&self) -> Option<u64> {
        self.closes().iter().map(|c| c.at_unix_ms).min()
    }

    /// Every close seen so far, in order.
    pub fn closes(&self) -> Vec<Close> {
        self.shared.closes.lock().unwrap().clone()
    }

    /// The clients that were closed more than once, with their count.
    pub fn closed_twice(&self) -> Vec<(usize, usize)> {
        let mut per_client: BTreeMap<usize, usize> = BTreeMap::new();
        for close in self.closes() {
            *per_client.entry(close.client).or_default() += 1;
        }
        per_client.into_iter().filter(|(_, n)| *n > 1).collect()
    }

    /// Closes per Unix second (the second's start in ms → count).
    pub fn closes_per_second(&self) -> BTreeMap<u64, usize> {
        let mut buckets = BTreeMap::new();
        for close in self.closes() {
            *buckets.entry(close.at_unix_ms / 1000).or_default() += 1;
        }
        buckets
    }

    /// Handshakes that succeeded.
    pub fn handshakes(&self) -> usize {
        self.shared.handshakes.load(Ordering::SeqCst)
    }

    /// Handshakes that failed (refused, timed out, or no first message).
    pub fn failed_handshakes(&self) -> usize {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// Waits up to `within` until every server in `servers` holds `expected`
    /// ± `tolerance` clients (and no other server holds any); how long it took.
    pub async fn wait_spread(
        &self,
        servers: &[&str],
        expected: usize,
        tolerance: usize,
        within: Duration,
    ) -> Option<Duration> {
        let started = Instant::now();
        loop {
            let spread = self.spread();
            let even = spread.len() == servers.len()
                && servers.iter().all(|s| {
                    let n = spread.get(*s).copied().unwrap_or(0);
                    n + tolerance >= expected && n <= expected + tolerance
                });
            if even {
                return Some(started.elapsed());
            }
            if started.elapsed() > within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One client: handshake (with its cookie), read the server's name, wait
/// for the close, record it, reconnect at once.
async fn client(
    index: usize,
    url: String,
    mut cookie: Option<String>,
    shared: Arc<Shared>,
    gate: Arc<tokio::sync::Semaphore>,
) {
    let mut first = Some(gate.acquire_owned().await);
    loop {
        let mut request = url.as_str().into_client_request().expect("request");
        if let Some(cookie) = &cookie {
            request
                .headers_mut()
                .insert(header::COOKIE, cookie.parse().expect("cookie"));
        }
        let connected = tokio::time::timeout(STEP_LIMIT, tokio_tungstenite::connect_async(request)).await;
        let Ok(Ok((mut ws, response))) = connected else {
            shared.failed.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if let Some(set) = response.headers().get(header::SET_COOKIE).and_then(|v| v.to_str().ok()) {
            cookie = set.split(';').next().map(str::to_string);
        }
        let server = match tokio::time::timeout(STEP_LIMIT, first_text(&mut ws)).await {
            Ok(Some(server)) => server,
            _ => {
                shared.failed.fetch_add(1, Ordering::SeqCst);
                continue;
            }
        };
        shared.handshakes.fetch_add(1, Ordering::SeqCst);
        shared.on.lock().unwrap()[index] = Some(server.clone());
        drop(first.take());
        let code = loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break None,
            }
        };
        shared.on.lock().unwrap()[index] = None;
        shared.closes.lock().unwrap().push(Close {
            client: index,
            server,
            code,
            at_unix_ms: unix_ms(),
        });
    }
}

/// The first text message (the test backend announces its name).
async fn first_text(ws: &mut crate::Ws) -> Option<String> {
    while let Some(message) = ws.next().await {
        match message {
            Ok(Message::Text(text)) => return Some(text.to_string()),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}
