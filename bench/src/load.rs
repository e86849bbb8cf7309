//! The four load modes. Each returns one JSON object: the figures of the run
//! plus its parameters, printed by `bench-load` as one line.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::{sleep_until, timeout, Instant};

use crate::client::{HttpClient, WsClient};
use crate::cpu;
use crate::kmem::KernelMem;
use crate::ws::{self, XorShift};

/// How long any single step (a handshake, an echo, a response) may take
/// before the connection counts as failed.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// A loopback address: the proxy's frontend or one echo server.
    pub addr: SocketAddr,
    /// Request path for handshakes and GETs.
    pub path: String,
}

/// Round-trip histogram in nanoseconds, 1 ns to 100 s at 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1));
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    (h.value_at_quantile(q) as f64 / 1000.0 * 10.0).round() / 10.0
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Reads the CPU time of `pids` at `start` and at `end` (the measured window
/// of a mode with a warm-up), in a task of its own.
fn sample_window(
    pids: &[u32],
    start: Instant,
    end: Instant,
) -> tokio::task::JoinHandle<(Option<cpu::Sample>, Option<cpu::Sample>)> {
    let pids = pids.to_vec();
    tokio::spawn(async move {
        sleep_until(start).await;
        let a = cpu::Sample::take(&pids);
        sleep_until(end).await;
        (a, cpu::Sample::take(&pids))
    })
}

/// Keeps the first error seen, for the result line.
#[derive(Default)]
struct FirstError(std::sync::Mutex<Option<String>>);

impl FirstError {
    fn set(&self, e: impl std::fmt::Display) {
        if let Ok(mut slot) = self.0.lock() {
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        }
    }
    fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|s| s.clone())
    }
}

/// Waits for every load task and merges their histograms and error counts;
/// a task that panicked counts as one error.
async fn merge_tasks(
    tasks: Vec<tokio::task::JoinHandle<(Histogram<u64>, u64)>>,
    first_error: &FirstError,
) -> (Histogram<u64>, u64) {
    let mut hist = new_histogram();
    let mut errors = 0u64;
    for task in tasks {
        match task.await {
            Ok((h, e)) => {
                let _ = hist.add(&h);
                errors += e;
            }
            Err(e) => {
                first_error.set(e);
                errors += 1;
            }
        }
    }
    (hist, errors)
}

async fn step<T>(fut: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    match timeout(STEP_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "step timed out")),
    }
}

/// Parameters of the `echo` mode.
#[derive(Debug, Clone)]
pub struct EchoParams {
    /// Concurrent connections, each with one message in flight.
    pub connections: usize,
    /// Message payload size in bytes.
    pub size: usize,
    /// Measured seconds.
    pub duration: Duration,
    /// Seconds of load before measuring starts (caches, pools, TCP windows).
    pub warmup: Duration,
    /// Processes (the proxy) whose CPU time is read at the start and end of
    /// the measured window → `proxy_cpu_us_per_op` per echoed message.
    pub cpu_pids: Vec<u32>,
}

/// `echo`: C connections each send an S-byte binary message and wait for its
/// echo, again and again, for D seconds → messages/s and round-trip quantiles.
pub async fn echo(target: &Target, p: &EchoParams) -> Value {
    let first_error = Arc::new(FirstError::default());
    let mut opening = Vec::with_capacity(p.connections);
    for i in 0..p.connections {
        let t = target.clone();
        opening.push(tokio::spawn(async move {
            step(WsClient::connect(t.addr, &t.path, None, XorShift::from_time(i as u64))).await
        }));
    }
    let mut clients = Vec::with_capacity(p.connections);
    for task in opening {
        match task.await {
            Ok(Ok(c)) => clients.push(c),
            Ok(Err(e)) => first_error.set(e),
            Err(e) => first_error.set(e),
        }
    }
    let open_failures = p.connections - clients.len();
    let measure_start = Instant::now() + p.warmup;
    let end = measure_start + p.duration;
    let cpu_window = sample_window(&p.cpu_pids, measure_start, end);
    let mut tasks = Vec::with_capacity(clients.len());
    for mut client in clients {
        let size = p.size;
        let first_error = Arc::clone(&first_error);
        tasks.push(tokio::spawn(async move {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut frame = Vec::with_capacity(size + 14);
            let key = client.rng.mask_key();
            ws::write_frame(&mut frame, true, ws::OP_BINARY, Some(key), &payload);
            let mut hist = new_histogram();
            let mut errors = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let result = step(async {
                    client.send(&frame).await?;
                    let h = client.read_frame().await?;
                    let ok = h.opcode == ws::OP_BINARY && h.fin && client.payload(&h) == payload.as_slice();
                    client.consume(&h);
                    if ok {
                        Ok(())
                    } else {
                        Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "echo differs from the message",
                        ))
                    }
                })
                .await;
                match result {
                    Ok(()) if t0 >= measure_start => record(&mut hist, t0.elapsed()),
                    Ok(()) => {}
                    Err(e) => {
                        first_error.set(e);
                        errors += 1;
                        break;
                    }
                }
            }
            let _ = timeout(Duration::from_secs(2), client.close()).await;
            (hist, errors)
        }));
    }
    let (hist, task_errors) = merge_tasks(tasks, &first_error).await;
    let (cpu_start, cpu_end) = cpu_window.await.unwrap_or((None, None));
    let errors = open_failures as u64 + task_errors;
    let secs = p.duration.as_secs_f64();
    let mut result = json!({
        "mode": "echo",
        "connections": p.connections,
        "size": p.size,
        "duration_s": secs,
        "messages": hist.len(),
        "rate": round1(hist.len() as f64 / secs),
        "p50_us": us(&hist, 0.50),
        "p99_us": us(&hist, 0.99),
        "p999_us": us(&hist, 0.999),
        "max_us": us(&hist, 1.0),
        "errors": errors,
        "first_error": first_error.get(),
        "ok": errors == 0 && !hist.is_empty(),
    });
    cpu::insert(&mut result, cpu_start, cpu_end, Some(secs), hist.len());
    result
}

/// Parameters of the `connect` mode.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    /// Handshakes in total.
    pub count: usize,
    /// Handshakes in flight at once.
    pub concurrency: usize,
    /// Size of the one message sent on each connection.
    pub size: usize,
    /// Processes (the proxy) whose CPU time is read before the first and
    /// after the last handshake → `proxy_cpu_us_per_op` per handshake.
    pub cpu_pids: Vec<u32>,
}

/// `connect`: N times connect, upgrade, send one message, await its echo and
/// close, C at a time → handshakes/s and latency quantiles of the whole cycle.
pub async fn connect(target: &Target, p: &ConnectParams) -> Value {
    let next = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(FirstError::default());
    // A target failing most handshakes has no figure to give: stop early
    // instead of waiting out a timeout per cycle.
    let failed = Arc::new(AtomicUsize::new(0));
    let give_up = (p.count / 10).max(100);
    let cpu_start = cpu::Sample::take(&p.cpu_pids);
    let start = Instant::now();
    let mut workers = Vec::with_capacity(p.concurrency);
    for w in 0..p.concurrency {
        let next = Arc::clone(&next);
        let first_error = Arc::clone(&first_error);
        let failed = Arc::clone(&failed);
        let target = target.clone();
        let (count, size) = (p.count, p.size);
        workers.push(tokio::spawn(async move {
            let payload = vec![0x5Au8; size];
            let mut rng = XorShift::from_time(w as u64);
            let mut hist = new_histogram();
            let mut errors = 0u64;
            while next.fetch_add(1, Ordering::Relaxed) < count && failed.load(Ordering::Relaxed) < give_up {
                let t0 = Instant::now();
                let cycle = step(async {
                    let mut c =
                        WsClient::connect(target.addr, &target.path, None, XorShift::new(rng.next_u64())).await?;
                    c.send_frame(ws::OP_BINARY, &payload).await?;
                    let h = c.read_frame().await?;
                    if h.opcode != ws::OP_BINARY || c.payload(&h) != payload.as_slice() {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "echo differs from the message",
                        ));
                    }
                    c.consume(&h);
                    c.close().await
                })
                .await;
                match cycle {
                    Ok(()) => record(&mut hist, t0.elapsed()),
                    Err(e) => {
                        first_error.set(e);
                        errors += 1;
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            (hist, errors)
        }));
    }
    let mut hist = new_histogram();
    let mut errors = 0u64;
    for w in workers {
        match w.await {
            Ok((h, e)) => {
                let _ = hist.add(&h);
                errors += e;
            }
            Err(e) => {
                first_error.set(e);
                errors += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu_end = cpu::Sample::take(&p.cpu_pids);
    let mut result = json!({
        "mode": "connect",
        "count": p.count,
        "concurrency": p.concurrency,
        "size": p.size,
        "elapsed_s": (secs * 100.0).round() / 100.0,
        "handshakes": hist.len(),
        "rate": round1(hist.len() as f64 / secs),
        "p50_us": us(&hist, 0.50),
        "p99_us": us(&hist, 0.99),
        "max_us": us(&hist, 1.0),
        "errors": errors,
        "first_error": first_error.get(),
        "ok": errors == 0 && !hist.is_empty(),
    });
    cpu::insert(&mut result, cpu_start, cpu_end, None, hist.len());
    result
}

/// Parameters of the `http` mode.
#[derive(Debug, Clone)]
pub struct HttpParams {
    /// Concurrent keep-alive connections, one request in flight on each.
    pub connections: usize,
    /// Measured seconds.
    pub duration: Duration,
    /// Seconds of load before measuring starts.
    pub warmup: Duration,
    /// Processes (the proxy) whose CPU time is read at the start and end of
    /// the measured window → `proxy_cpu_us_per_op` per request.
    pub cpu_pids: Vec<u32>,
}

/// `http`: C keep-alive connections each sending GETs for D seconds →
/// requests/s and latency quantiles. A connection the server closes is reopened.
pub async fn http(target: &Target, p: &HttpParams) -> Value {
    let first_error = Arc::new(FirstError::default());
    let reconnects = Arc::new(AtomicU64::new(0));
    let measure_start = Instant::now() + p.warmup;
    let end = measure_start + p.duration;
    let cpu_window = sample_window(&p.cpu_pids, measure_start, end);
    let mut tasks = Vec::with_capacity(p.connections);
    for _ in 0..p.connections {
        let target = target.clone();
        let first_error = Arc::clone(&first_error);
        let reconnects = Arc::clone(&reconnects);
        tasks.push(tokio::spawn(async move {
            let mut hist = new_histogram();
            let mut errors = 0u64;
            let mut client: Option<HttpClient> = None;
            while Instant::now() < end {
                let c = match client.as_mut() {
                    Some(c) => c,
                    None => match step(HttpClient::connect(target.addr, &target.path)).await {
                        Ok(c) => client.insert(c),
                        Err(e) => {
                            first_error.set(e);
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let t0 = Instant::now();
                match step(c.get()).await {
                    Ok(resp) => {
                        if resp.status != 200 {
                            first_error.set(format!("status {}", resp.status));
                            errors += 1;
                        } else if t0 >= measure_start {
                            record(&mut hist, t0.elapsed());
                        }
                        if !resp.keep_alive {
                            client = None;
                            reconnects.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        first_error.set(e);
                        errors += 1;
                        client = None;
                        reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            (hist, errors)
        }));
    }
    let (hist, errors) = merge_tasks(tasks, &first_error).await;
    let (cpu_start, cpu_end) = cpu_window.await.unwrap_or((None, None));
    let secs = p.duration.as_secs_f64();
    let mut result = json!({
        "mode": "http",
        "connections": p.connections,
        "duration_s": secs,
        "requests": hist.len(),
        "rate": round1(hist.len() as f64 / secs),
        "p50_us": us(&hist, 0.50),
        "p99_us": us(&hist, 0.99),
        "max_us": us(&hist, 1.0),
        "reconnects": reconnects.load(Ordering::Relaxed),
        "errors": errors,
        "first_error": first_error.get(),
        "ok": errors == 0 && !hist.is_empty(),
    });
    cpu::insert(&mut result, cpu_start, cpu_end, Some(secs), hist.len());
    result
}

/// Parameters of the `idle` mode.
#[derive(Debug, Clone)]
pub struct IdleParams {
    /// WebSockets to open and hold.
    pub count: usize,
    /// How long to hold them once all are open.
    pub hold: Duration,
    /// Each connection sends a ping this often (first one at a random offset).
    pub ping_interval: Duration,
    /// Handshakes in flight while opening.
    pub open_concurrency: usize,
    /// Source addresses 127.0.0.1 ..= 127.0.0.K; 0 picks enough for the local port range.
    pub sources: usize,
    /// Written (with a JSON summary) once every connection has been attempted.
    pub ready_file: Option<PathBuf>,
    /// Processes whose resident memory is read before, once all are open, and
    /// at the end of the hold (their sum, in KiB).
    pub rss_pids: Vec<u32>,
}

/// The resident set size of a process in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss_sum(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| rss_kib(p)).sum()
}

/// Usable source ports per source address towards one destination.
fn ports_per_source() -> usize {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = range.split_whitespace().filter_map(|s| s.parse::<usize>().ok());
    match (it.next(), it.next()) {
        (Some(lo), Some(hi)) if hi > lo => (hi - lo + 1) * 9 / 10,
        _ => 25_000,
    }
}

/// The source addresses for `count` connections: none (the kernel's choice)
/// while one address has enough ports, else 127.0.0.1 ..= 127.0.0.K.
pub fn source_addresses(count: usize, requested: usize) -> Vec<IpAddr> {
    let k = if requested > 0 {
        requested
    } else {
        let per = ports_per_source().max(1);
        if count <= per {
            return Vec::new();
        }
        count.div_ceil(per)
    };
    (1..=k.min(254))
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)))
        .collect()
}

/// What one idle connection ended as.
enum IdleOutcome {
    NotOpened,
    /// Closed or failed during the hold (or its final ping went unanswered).
    Lost,
    /// Answered the final ping.
    Alive,
}

/// `idle`: open N WebSockets, hold them T seconds with an occasional ping,
/// then ping each once more → how many stayed open, and the memory of the
/// given processes per connection.
pub async fn idle(target: &Target, p: &IdleParams) -> Value {
    let sources = source_addresses(p.count, p.sources);
    let first_error = Arc::new(FirstError::default());
    let pongs = Arc::new(AtomicU64::new(0));
    let pending = Arc::new(AtomicUsize::new(p.count));
    let all_attempted = Arc::new(Notify::new());
    let gate = Arc::new(Semaphore::new(p.open_concurrency.max(1)));
    // Carries the end of the hold to every connection once all are open.
    let (hold_tx, hold_rx) = watch::channel::<Option<Instant>>(None);
    let rss_before = rss_sum(&p.rss_pids);
    let kernel_before = KernelMem::read();
    let client_before = rss_kib(std::process::id());
    let open_start = Instant::now();
    let mut tasks = Vec::with_capacity(p.count);
    for i in 0..p.count {
        let target = target.clone();
        let source = if sources.is_empty() {
            None
        } else {
            Some(sources[i % sources.len()])
        };
        let first_error = Arc::clone(&first_error);
        let pongs = Arc::clone(&pongs);
        let pending = Arc::clone(&pending);
        let all_attempted = Arc::clone(&all_attempted);
        let gate = Arc::clone(&gate);
        let mut hold_rx = hold_rx.clone();
        let interval = p.ping_interval.max(Duration::from_millis(10));
        tasks.push(tokio::spawn(async move {
            let mut rng = XorShift::from_time(i as u64);
            let opened = {
                let _permit = gate.acquire().await;
                step(WsClient::connect(
                    target.addr,
                    &target.path,
                    source,
                    XorShift::new(rng.next_u64()),
                ))
                .await
            };
            if pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                all_attempted.notify_one();
            }
            let mut client = match opened {
                Ok(c) => c,
                Err(e) => {
                    first_error.set(format!("open: {e}"));
                    return IdleOutcome::NotOpened;
                }
            };
            let hold_end = loop {
                if let Some(end) = *hold_rx.borrow_and_update() {
                    break end;
                }
                if hold_rx.changed().await.is_err() {
                    return IdleOutcome::Lost;
                }
            };
            let jitter = Duration::from_nanos(rng.next_u64() % (interval.as_nanos() as u64).max(1));
            let mut next_ping = Instant::now() + jitter;
            let mut ping_sent: Option<Instant> = None;
            loop {
                let wake = next_ping.min(hold_end);
                tokio::select! {
                    _ = sleep_until(wake) => {}
                    r = client.read_more() => {
                        if let Err(e) = r {
                            first_error.set(format!("hold: {e}"));
                            return IdleOutcome::Lost;
                        }
                        loop {
                            match client.buffered_frame() {
                                Ok(Some(h)) => {
                                    let opcode = h.opcode;
                                    client.consume(&h);
                                    if opcode == ws::OP_PONG {
                                        pongs.fetch_add(1, Ordering::Relaxed);
                                        ping_sent = None;
                                    } else if opcode == ws::OP_CLOSE {
                                        first_error.set("hold: closed by the peer");
                                        return IdleOutcome::Lost;
                                    }
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    first_error.set(format!("hold: {e}"));
                                    return IdleOutcome::Lost;
                                }
                            }
                        }
                        continue;
                    }
                }
                let now = Instant::now();
                if now >= hold_end {
                    break;
                }
                if let Some(sent) = ping_sent {
                    if now - sent > STEP_TIMEOUT {
                        first_error.set("hold: pong timed out");
                        return IdleOutcome::Lost;
                    }
                }
                if let Err(e) = client.send_frame(ws::OP_PING, b"idle").await {
                    first_error.set(format!("hold: {e}"));
                    return IdleOutcome::Lost;
                }
                ping_sent.get_or_insert(now);
                next_ping += interval;
            }
            // The final check: this connection still answers a ping.
            let alive = step(async {
                client.send_frame(ws::OP_PING, b"last").await?;
                loop {
                    let h = client.read_frame().await?;
                    let opcode = h.opcode;
                    let last = client.payload(&h) == b"last";
                    client.consume(&h);
                    match opcode {
                        ws::OP_PONG if last => return Ok(()),
                        ws::OP_CLOSE => return Err(io::Error::other("closed by the peer")),
                        _ => {}
                    }
                }
            })
            .await;
            match alive {
                Ok(()) => {
                    let _ = timeout(Duration::from_secs(2), client.close()).await;
                    IdleOutcome::Alive
                }
                Err(e) => {
                    first_error.set(format!("final ping: {e}"));
                    IdleOutcome::Lost
                }
            }
        }));
    }
    drop(hold_rx);
    if p.count > 0 {
        all_attempted.notified().await;
    }
    let open_secs = open_start.elapsed().as_secs_f64();
    // Let the proxy finish the bookkeeping of the last handshakes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_open = rss_sum(&p.rss_pids);
    let kernel_open = KernelMem::read();
    let client_open = rss_kib(std::process::id());
    let hold_end = Instant::now() + p.hold;
    let _ = hold_tx.send(Some(hold_end));
    if let Some(path) = &p.ready_file {
        let note = json!({ "ready": true, "rss_open_kib": rss_open, "open_s": open_secs });
        if let Err(e) = std::fs::write(path, format!("{note}\n")) {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
    eprintln!("READY: all {} connections attempted in {open_secs:.1}s", p.count);
    sleep_until(hold_end).await;
    let rss_end = rss_sum(&p.rss_pids);
    let (mut not_opened, mut lost, mut alive) = (0u64, 0u64, 0u64);
    for t in tasks {
        match t.await {
            Ok(IdleOutcome::NotOpened) => not_opened += 1,
            Ok(IdleOutcome::Lost) | Err(_) => lost += 1,
            Ok(IdleOutcome::Alive) => alive += 1,
        }
    }
    let opened = p.count as u64 - not_opened;
    let per_conn = match (rss_before, rss_open) {
        (Some(b), Some(o)) if opened > 0 => Some(((o as f64 - b as f64) / opened as f64 * 1000.0).round() / 1000.0),
        _ => None,
    };
    // Every socket of the run counts here (the load generator's and the echo
    // servers' too); the report subtracts the `direct` figure.
    let kernel = kernel_open.per_conn_since(&kernel_before, opened);
    let mut result = json!({
        "mode": "idle",
        "count": p.count,
        "hold_s": p.hold.as_secs_f64(),
        "ping_interval_s": p.ping_interval.as_secs_f64(),
        "sources": sources.len().max(1),
        "opened": opened,
        "open_s": round1(open_secs),
        "lost": lost,
        "alive": alive,
        "pongs": pongs.load(Ordering::Relaxed),
        "rss_pids": p.rss_pids,
        "rss_before_kib": rss_before,
        "rss_open_kib": rss_open,
        "rss_end_kib": rss_end,
        "kib_per_conn": per_conn,
        // The load generator's own memory per connection (for sizing a big run).
        "client_kib_per_conn": match (client_before, client_open) {
            (Some(b), Some(o)) if opened > 0 => Some(((o as f64 - b as f64) / opened as f64 * 1000.0).round() / 1000.0),
            _ => None,
        },
        "first_error": first_error.get(),
        "ok": opened == p.count as u64 && lost == 0,
    });
    if let Some(fields) = result.as_object_mut() {
        fields.extend(kernel);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_connections_need_no_source_binding() {
        assert!(source_addresses(1_000, 0).is_empty());
    }

    #[test]
    fn many_connections_spread_over_loopback_sources() {
        let s = source_addresses(300_000, 0);
        assert!(s.len() >= 300_000 / 64_512);
        assert_eq!(s[0], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        assert!(s.iter().all(|ip| ip.is_loopback()));
        assert_eq!(source_addresses(10, 3).len(), 3);
    }
}
