//! Checked echo clients: WebSockets that number every message, check every
//! echo (order, length, content) and classify every close.
//!
//! Each client keeps up to `window` messages in flight, one sent every
//! `interval`. An echo must carry the next expected sequence number and the
//! exact bytes that were sent: a later number means the ones in between were
//! lost, an earlier one a reordering, other bytes a corruption. A close sent
//! by the proxy is *expected* only when it is a 1012 from a server the run
//! took away (removed by a reload, killed) while the client was on it
//! ([`Expectations`]); any other close, a connection reset or a stall counts
//! as unexpected, and the messages then in flight as lost.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::client::WsClient;
use crate::ws::{self, XorShift};

/// How long a handshake may take before it counts as failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the peer's Close or end of stream once closing.
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// Fixed part of every message: client id (4), sequence (8), length (4),
/// check of those three (4).
const HEADER: usize = 20;

/// What the checked clients do.
#[derive(Debug, Clone)]
pub struct ClientParams {
    /// The frontends; client `i` uses `addrs[i % len]`.
    pub addrs: Vec<SocketAddr>,
    /// One message per client this often.
    pub interval: Duration,
    /// Most messages in flight per client.
    pub window: usize,
    /// An echo missing for this long counts its message as lost (stall).
    pub stall: Duration,
    /// A client closes normally (1000) and reconnects after a lifetime drawn
    /// in this range, so new handshakes go on during the whole run.
    pub churn: Option<(Duration, Duration)>,
    /// Clients started per second at the beginning.
    pub ramp_per_second: u32,
}

/// Which servers were taken away, and when: a 1012 close from a server is
/// expected when the client started its handshake before a take-away of that
/// server was applied and the close came after the take-away began.
///
/// A take-away has a start (just before the SIGHUP or the SIGKILL) and a
/// moment it is known applied (the reload counter moved, the process is
/// reaped): no handshake that starts after that can reach the server.
#[derive(Debug, Default)]
pub struct Expectations {
    /// Per server name: each take-away.
    taken: Mutex<HashMap<String, Vec<TakeAway>>>,
}

/// One taking away of a server.
#[derive(Debug, Clone, Copy)]
struct TakeAway {
    /// Just before the SIGHUP or SIGKILL.
    began: Instant,
    /// When it was known applied.
    applied: Option<Instant>,
}

impl Expectations {
    /// Records that taking `server` away begins now; returns its index for [`Expectations::applied`].
    pub fn begin(&self, server: &str) -> usize {
        let mut map = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(server.to_owned()).or_default();
        list.push(TakeAway {
            began: Instant::now(),
            applied: None,
        });
        list.len() - 1
    }

    /// Records that take-away `index` of `server` is applied now.
    pub fn applied(&self, server: &str, index: usize) {
        let mut map = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get_mut(server).and_then(|l| l.get_mut(index)) {
            entry.applied.get_or_insert_with(Instant::now);
        }
    }

    /// The start of the take-away that explains a 1012 from `server` to a
    /// client whose handshake started at `handshake`, closed at `closed`.
    pub fn explains(&self, server: &str, handshake: Instant, closed: Instant) -> Option<Instant> {
        let map = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        map.get(server)?
            .iter()
            .rev()
            .find(|t| t.began <= closed && handshake <= t.applied.unwrap_or(closed))
            .map(|t| t.began)
    }
}

/// Counters of a run, shared by every client.
#[derive(Debug, Default)]
pub struct Stats {
    /// Handshakes answered 101.
    pub handshakes_ok: AtomicU64,
    /// Handshakes refused, reset or timed out.
    pub handshakes_failed: AtomicU64,
    /// Messages sent.
    pub sent: AtomicU64,
    /// Echoes received intact and in order.
    pub echoed: AtomicU64,
    /// Messages never echoed while their connection stayed open, or in flight
    /// when the connection ended unexpectedly.
    pub lost: AtomicU64,
    /// Echoes that came back before an earlier message's.
    pub reordered: AtomicU64,
    /// Echoes whose bytes differ from what was sent.
    pub corrupted: AtomicU64,
    /// 1012 closes from a server taken away after the handshake.
    pub expected_closes: AtomicU64,
    /// Messages in flight when an expected close came (the server's echo
    /// cannot follow a Close: not a loss).
    pub in_flight_at_expected_close: AtomicU64,
    /// Every other end of a connection not asked for by the client.
    pub unexpected_closes: AtomicU64,
    /// Normal closes (1000) by the client: churn and the end of the run.
    pub client_closes: AtomicU64,
    /// Delays from a server being taken away to the expected close, in µs.
    pub close_delays_us: Mutex<Vec<u64>>,
    /// A few descriptions of failures, for the report.
    pub samples: Mutex<Vec<String>>,
    /// Open connections per server name.
    pub open: Mutex<HashMap<String, i64>>,
}

impl Stats {
    /// Keeps a description of a failure (the first 12 only).
    pub fn sample(&self, what: String) {
        if let Ok(mut s) = self.samples.lock() {
            if s.len() < 12 {
                s.push(what);
            }
        }
    }

    fn open_delta(&self, server: &str, delta: i64) {
        if let Ok(mut m) = self.open.lock() {
            *m.entry(server.to_owned()).or_insert(0) += delta;
        }
    }

    /// Connections open to `server` right now.
    pub fn open_on(&self, server: &str) -> i64 {
        self.open.lock().ok().and_then(|m| m.get(server).copied()).unwrap_or(0)
    }

    /// Connections open in all.
    pub fn open_total(&self) -> i64 {
        self.open.lock().map(|m| m.values().sum()).unwrap_or(0)
    }

    /// The largest close delay recorded, in milliseconds.
    pub fn max_close_delay_ms(&self) -> Option<f64> {
        let d = self.close_delays_us.lock().ok()?;
        d.iter().max().map(|&us| us as f64 / 1000.0)
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A running group of checked clients.
pub struct Clients {
    /// The shared counters.
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    stop_notify: Arc<tokio::sync::Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Clients {
    /// Starts `count` clients (ramped up at `ramp_per_second`).
    pub fn start(count: usize, params: ClientParams, expect: Arc<Expectations>) -> Clients {
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let stop_notify = Arc::new(tokio::sync::Notify::new());
        let params = Arc::new(params);
        let tasks = (0..count)
            .map(|i| {
                let ctx = Ctx {
                    id: i as u32,
                    params: Arc::clone(&params),
                    stats: Arc::clone(&stats),
                    expect: Arc::clone(&expect),
                    stop: Arc::clone(&stop),
                    stop_notify: Arc::clone(&stop_notify),
                };
                tokio::spawn(ctx.run())
            })
            .collect();
        Clients {
            stats,
            stop,
            stop_notify,
            tasks,
        }
    }

    /// Waits until `count` handshakes succeeded or `limit` passed; true if they did.
    pub async fn wait_open(&self, count: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if Stats::get(&self.stats.handshakes_ok) >= count {
                return true;
            }
            sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Asks every client to close normally and waits for them (at most `limit`;
    /// clients still running then are aborted and counted as unexpected ends).
    pub async fn stop(self, limit: Duration) -> Arc<Stats> {
        self.stop.store(true, Ordering::SeqCst);
        self.stop_notify.notify_waiters();
        let deadline = Instant::now() + limit;
        for task in self.tasks {
            let abort = task.abort_handle();
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.stats.unexpected_closes.fetch_add(1, Ordering::Relaxed);
                    self.stats.sample(format!("client task failed: {e}"));
                }
                Err(_) => {
                    abort.abort();
                    self.stats.unexpected_closes.fetch_add(1, Ordering::Relaxed);
                    self.stats.sample("client did not finish its close in time".into());
                }
            }
        }
        self.stats
    }
}

struct Ctx {
    id: u32,
    params: Arc<ClientParams>,
    stats: Arc<Stats>,
    expect: Arc<Expectations>,
    stop: Arc<AtomicBool>,
    stop_notify: Arc<tokio::sync::Notify>,
}

/// How a session ended.
enum End {
    /// The client closed (churn or end of run) and the close handshake completed.
    ClientClose,
    /// The proxy sent a Close with this code (None: empty Close body).
    Closed(Option<u16>),
    /// The connection ended without a Close, or failed.
    Broken(String),
    /// An echo did not come within the stall limit.
    Stalled,
}

impl Ctx {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    async fn run(self) {
        let ramp = self.params.ramp_per_second.max(1);
        sleep(Duration::from_micros(u64::from(self.id) * 1_000_000 / u64::from(ramp))).await;
        let addr = self.params.addrs[self.id as usize % self.params.addrs.len()];
        let mut rng = XorShift::from_time(u64::from(self.id) + 1);
        let mut seq: u64 = 0;
        let mut first = true;
        while !self.stopping() {
            let handshake_at = Instant::now();
            let connected = timeout(HANDSHAKE_TIMEOUT, WsClient::connect(addr, "/soak", None, rng.clone())).await;
            rng.next_u64();
            let client = match connected {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    self.fail_handshake(format!("handshake via {addr}: {e}"));
                    sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(_) => {
                    self.fail_handshake(format!("handshake via {addr}: no answer in {HANDSHAKE_TIMEOUT:?}"));
                    continue;
                }
            };
            self.stats.handshakes_ok.fetch_add(1, Ordering::Relaxed);
            let server = client.server_name.clone().unwrap_or_else(|| "?".into());
            self.stats.open_delta(&server, 1);
            // The first lifetime is drawn in [0, hi) so that closes and new
            // handshakes go on at a steady rate from the start.
            let lifetime = self.params.churn.map(|(lo, hi)| {
                let lo = if first { Duration::ZERO } else { lo };
                let span = hi.saturating_sub(lo).as_millis().max(1) as u64;
                lo + Duration::from_millis(rng.next_u64() % span)
            });
            first = false;
            let mut in_flight = VecDeque::new();
            let end = self.session(client, &mut seq, &mut in_flight, lifetime).await;
            self.stats.open_delta(&server, -1);
            self.classify(end, &server, handshake_at, in_flight.len() as u64, addr);
        }
    }

    fn fail_handshake(&self, what: String) {
        self.stats.handshakes_failed.fetch_add(1, Ordering::Relaxed);
        self.stats.sample(what);
    }

    fn classify(&self, end: End, server: &str, handshake_at: Instant, in_flight: u64, addr: SocketAddr) {
        let s = &self.stats;
        let now = Instant::now();
        let taken_at = match end {
            End::Closed(Some(1012)) => self.expect.explains(server, handshake_at, now),
            _ => None,
        };
        match end {
            End::ClientClose => {
                s.client_closes.fetch_add(1, Ordering::Relaxed);
            }
            End::Closed(Some(1012)) if taken_at.is_some() => {
                s.expected_closes.fetch_add(1, Ordering::Relaxed);
                s.in_flight_at_expected_close.fetch_add(in_flight, Ordering::Relaxed);
                if let (Some(at), Ok(mut d)) = (taken_at, s.close_delays_us.lock()) {
                    d.push(now.saturating_duration_since(at).as_micros() as u64);
                }
            }
            other => {
                s.unexpected_closes.fetch_add(1, Ordering::Relaxed);
                s.lost.fetch_add(in_flight, Ordering::Relaxed);
                let what = match other {
                    End::Closed(code) => format!("Close {code:?}"),
                    End::Broken(e) => format!("ended without a Close: {e}"),
                    End::Stalled => format!("no echo within {:?}", self.params.stall),
                    End::ClientClose => unreachable!("handled above"),
                };
                s.sample(format!(
                    "client {} via {addr} on server {server}: {what} ({in_flight} message(s) in flight)",
                    self.id
                ));
            }
        }
    }

    /// Sends numbered messages and checks the echoes until the connection
    /// ends; `in_flight` holds the messages not yet echoed when it returns.
    async fn session(
        &self,
        mut client: WsClient,
        seq: &mut u64,
        in_flight: &mut VecDeque<(u64, Instant)>,
        lifetime: Option<Duration>,
    ) -> End {
        let started = Instant::now();
        let mut next_send = Instant::now() + self.params.interval.mul_f64(jitter(&mut client.rng));
        loop {
            if self.stopping() || lifetime.is_some_and(|l| started.elapsed() >= l) {
                return self.close(client, in_flight).await;
            }
            if let Some((_, sent)) = in_flight.front() {
                if sent.elapsed() >= self.params.stall {
                    return End::Stalled;
                }
            }
            // Every frame already buffered first.
            match self.drain_frames(&mut client, in_flight, false).await {
                Ok(Some(end)) => return end,
                Ok(None) => {}
                Err(e) => return End::Broken(e.to_string()),
            }
            let stall_at = in_flight
                .front()
                .map(|(_, sent)| *sent + self.params.stall)
                .unwrap_or_else(|| Instant::now() + self.params.stall);
            let can_send = in_flight.len() < self.params.window;
            let wake = if can_send { next_send.min(stall_at) } else { stall_at };
            tokio::select! {
                read = client.read_more() => {
                    if let Err(e) = read {
                        return End::Broken(e.to_string());
                    }
                }
                _ = sleep_until(wake) => {
                    if can_send && Instant::now() >= next_send {
                        let msg = message(self.id, *seq);
                        if let Err(e) = client.send_frame(ws::OP_BINARY, &msg).await {
                            return End::Broken(format!("send: {e}"));
                        }
                        in_flight.push_back((*seq, Instant::now()));
                        *seq += 1;
                        self.stats.sent.fetch_add(1, Ordering::Relaxed);
                        next_send += self.params.interval;
                        if next_send < Instant::now() {
                            next_send = Instant::now() + self.params.interval;
                        }
                    }
                }
                _ = self.stop_notify.notified() => {}
            }
        }
    }

    /// Handles every complete frame in the buffer: echoes are checked, pings
    /// answered; a Close ends the session.
    /// `closing`: the client already sent its Close, so the peer's is not answered.
    async fn drain_frames(
        &self,
        client: &mut WsClient,
        in_flight: &mut VecDeque<(u64, Instant)>,
        closing: bool,
    ) -> io::Result<Option<End>> {
        while let Some(h) = client.buffered_frame()? {
            match h.opcode {
                ws::OP_BINARY | ws::OP_TEXT | ws::OP_CONTINUATION => {
                    let payload = client.payload(&h).to_vec();
                    client.consume(&h);
                    self.check_echo(&payload, in_flight);
                }
                ws::OP_PING => {
                    let payload = client.payload(&h).to_vec();
                    client.consume(&h);
                    client.send_frame(ws::OP_PONG, &payload).await?;
                }
                ws::OP_PONG => client.consume(&h),
                ws::OP_CLOSE => {
                    let payload = client.payload(&h).to_vec();
                    client.consume(&h);
                    let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    // Answer the Close (same code) and wait for the end of stream.
                    if !closing {
                        let answer = code.unwrap_or(1000).to_be_bytes();
                        let _ = client.send_frame(ws::OP_CLOSE, &answer).await;
                    }
                    let _ = timeout(CLOSE_WAIT, async { while client.read_more().await.is_ok() {} }).await;
                    return Ok(Some(End::Closed(code)));
                }
                other => {
                    client.consume(&h);
                    self.stats
                        .sample(format!("client {}: unexpected opcode {other}", self.id));
                    self.stats.corrupted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(None)
    }

    fn check_echo(&self, payload: &[u8], in_flight: &mut VecDeque<(u64, Instant)>) {
        let s = &self.stats;
        let Some(got) = parse_message(self.id, payload) else {
            s.corrupted.fetch_add(1, Ordering::Relaxed);
            s.sample(format!("client {}: corrupted echo of {} bytes", self.id, payload.len()));
            // The oldest message is the one this should have been.
            in_flight.pop_front();
            return;
        };
        match in_flight.iter().position(|(n, _)| *n == got) {
            Some(0) => {
                in_flight.pop_front();
                s.echoed.fetch_add(1, Ordering::Relaxed);
            }
            Some(k) => {
                // Echoes of older messages were skipped: lost (unless they come later).
                s.lost.fetch_add(k as u64, Ordering::Relaxed);
                s.sample(format!(
                    "client {}: echo of #{got} came before {k} older message(s)",
                    self.id
                ));
                in_flight.drain(..=k);
                s.echoed.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                s.reordered.fetch_add(1, Ordering::Relaxed);
                s.sample(format!(
                    "client {}: echo of #{got} not expected (late or duplicate)",
                    self.id
                ));
            }
        }
    }

    /// Closes normally (1000): the echoes still in flight must come back
    /// before the server's Close.
    async fn close(&self, mut client: WsClient, in_flight: &mut VecDeque<(u64, Instant)>) -> End {
        if let Err(e) = client.send_frame(ws::OP_CLOSE, &1000u16.to_be_bytes()).await {
            return End::Broken(format!("sending Close: {e}"));
        }
        let done = timeout(CLOSE_WAIT, async {
            loop {
                match self.drain_frames(&mut client, in_flight, true).await {
                    Ok(Some(End::Closed(Some(1000)))) => return End::ClientClose,
                    Ok(Some(end)) => return end,
                    Ok(None) => {}
                    Err(e) => return End::Broken(e.to_string()),
                }
                if let Err(e) = client.read_more().await {
                    return End::Broken(format!("while closing: {e}"));
                }
            }
        })
        .await;
        done.unwrap_or_else(|_| End::Broken("no Close answer".into()))
    }
}

fn jitter(rng: &mut XorShift) -> f64 {
    (rng.next_u64() % 1000) as f64 / 1000.0
}

/// The length of message `seq`: 20 to 1,043 bytes, varying.
fn message_len(seq: u64) -> usize {
    HEADER + ((seq.wrapping_mul(2_654_435_761) >> 7) % 1024) as usize
}

/// A mix of the header fields (splitmix64 finaliser), so that a changed id,
/// sequence or length is caught even in a message without pattern bytes.
fn header_check(id: u32, seq: u64, len: usize) -> u32 {
    let mut x = seq ^ (u64::from(id) << 32) ^ (len as u64).rotate_left(17);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)) as u32
}

fn fill_byte(id: u32, seq: u64, i: usize) -> u8 {
    (seq.wrapping_mul(31) ^ (i as u64).wrapping_mul(7) ^ u64::from(id).wrapping_mul(13)) as u8
}

/// Message `seq` of client `id`: id, sequence, length and their check, then a pattern.
pub fn message(id: u32, seq: u64) -> Vec<u8> {
    let len = message_len(seq);
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&(len as u32).to_be_bytes());
    m.extend_from_slice(&header_check(id, seq, len).to_be_bytes());
    m.extend((HEADER..len).map(|i| fill_byte(id, seq, i)));
    m
}

/// The sequence number of an intact echo of one of client `id`'s messages.
pub fn parse_message(id: u32, m: &[u8]) -> Option<u64> {
    if m.len() < HEADER {
        return None;
    }
    let got_id = u32::from_be_bytes(m[0..4].try_into().ok()?);
    let seq = u64::from_be_bytes(m[4..12].try_into().ok()?);
    let len = u32::from_be_bytes(m[12..16].try_into().ok()?) as usize;
    let check = u32::from_be_bytes(m[16..20].try_into().ok()?);
    let intact = got_id == id
        && check == header_check(id, seq, len)
        && len == m.len()
        && len == message_len(seq)
        && m[HEADER..]
            .iter()
            .enumerate()
            .all(|(k, &b)| b == fill_byte(id, seq, HEADER + k));
    intact.then_some(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_any_flipped_byte_is_caught() {
        for seq in (0u64..300).chain([1 << 40, u64::MAX]) {
            let m = message(9, seq);
            assert_eq!(parse_message(9, &m), Some(seq));
            assert_eq!(parse_message(8, &m), None);
            for i in (0..HEADER).chain([m.len() - 1]) {
                for bit in 0..8 {
                    let mut bad = m.clone();
                    bad[i] ^= 1 << bit;
                    assert_eq!(parse_message(9, &bad), None, "bit {bit} of byte {i} of #{seq}");
                }
            }
            assert_eq!(parse_message(9, &m[..m.len() - 1]), None);
        }
    }

    #[test]
    fn a_1012_is_expected_only_for_clients_on_the_server_when_it_was_taken_away() {
        let e = Expectations::default();
        let t0 = Instant::now();
        let on_it = t0;
        let ms = Duration::from_millis;
        std::thread::sleep(ms(5));
        let i = e.begin("s4");
        // Not yet applied: any client closed after the start is explained.
        assert!(e.explains("s4", on_it, Instant::now()).is_some());
        std::thread::sleep(ms(5));
        e.applied("s4", i);
        std::thread::sleep(ms(5));
        let later = Instant::now();
        std::thread::sleep(ms(5));
        let close = Instant::now();
        assert!(e.explains("s4", on_it, close).is_some());
        // A handshake started after the removal was applied cannot be on it.
        assert!(e.explains("s4", later, close).is_none());
        // Another server, or a close before the take-away began.
        assert!(e.explains("s1", on_it, close).is_none());
        assert!(e.explains("s4", t0, t0).is_none());
    }
}
