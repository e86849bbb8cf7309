//! `bench-h2`: WebSockets over HTTP/2 (RFC 8441 extended CONNECT) through a
//! proxy that speaks h2c with prior knowledge, all on ONE client connection.
//!
//! - `echo`: `--streams` WebSockets on one h2 connection each send a message
//!   and wait for its echo, in a closed loop, for `--duration` seconds:
//!   messages per second and round-trip percentiles.
//! - `idle`: `--streams` idle WebSockets opened on one h2 connection and held
//!   for `--hold` seconds: the resident memory the process `--rss-pid` (the
//!   proxy) grew by, per WebSocket.
//!
//! Prints one JSON line. The proxy must let one connection open that many
//! streams (tether: `limits.http2_max_concurrent_streams`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use tether_bench::kmem::KernelMem;
use tether_bench::load::rss_kib;
use tether_bench::ws::{self, XorShift, OP_BINARY};

#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The proxy's h2c address (loopback only).
    #[arg(long, global = true, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// The WebSocket path.
    #[arg(long, global = true, default_value = "/ws")]
    path: String,
    /// The target's name in the JSON line.
    #[arg(long, global = true, default_value = "tether")]
    target: String,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Closed-loop echo over WebSockets sharing one h2 connection.
    Echo {
        /// WebSockets on the connection.
        #[arg(long, default_value_t = 50)]
        streams: usize,
        /// Message payload in bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Seconds to measure.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
    },
    /// Idle WebSockets on one h2 connection: the proxy's memory per WebSocket.
    Idle {
        /// WebSockets on the connection.
        #[arg(long, default_value_t = 1000)]
        streams: usize,
        /// Seconds to hold them open before measuring.
        #[arg(long, default_value_t = 5.0)]
        hold: f64,
        /// The proxy's process id (its VmRSS is read before and after).
        #[arg(long = "rss-pid")]
        rss_pid: u32,
    },
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        eprintln!("refusing {}: loopback addresses only", args.addr);
        return ExitCode::FAILURE;
    }
    let rt = match tether_bench::runtime(1) {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bench-h2: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<serde_json::Value, Error> {
    let client = connect(args.addr).await?;
    match args.mode {
        Mode::Echo {
            streams,
            size,
            duration,
        } => echo(&client, &args, streams, size, duration).await,
        Mode::Idle { streams, hold, rss_pid } => idle(&client, &args, streams, hold, rss_pid).await,
    }
}

/// One h2c connection with prior knowledge, driven by a task of its own.
async fn connect(addr: SocketAddr) -> Result<h2::client::SendRequest<Bytes>, Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(64 << 20)
        .handshake(tcp)
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let client = client.ready().await?;
    // The server's SETTINGS (extended CONNECT allowed) come with its first frames.
    for _ in 0..200 {
        if client.is_extended_connect_protocol_enabled() {
            return Ok(client);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err("the server does not allow extended CONNECT (RFC 8441)".into())
}

/// One WebSocket on a stream of `client`.
struct H2Ws {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    buf: BytesMut,
}

async fn open(client: &h2::client::SendRequest<Bytes>, path: &str) -> Result<H2Ws, Error> {
    let request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://bench.test{path}"))
        .header("sec-websocket-version", "13")
        .extension(h2::ext::Protocol::from_static("websocket"))
        .body(())?;
    let mut client = client.clone().ready().await?;
    let (response, send) = client.send_request(request, false)?;
    let response = response.await?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("extended CONNECT answered {}", response.status()).into());
    }
    Ok(H2Ws {
        send,
        recv: response.into_body(),
        buf: BytesMut::new(),
    })
}

impl H2Ws {
    async fn send_frame(&mut self, frame: Bytes) -> Result<(), Error> {
        self.send.reserve_capacity(frame.len());
        let mut frame = frame;
        while !frame.is_empty() {
            let granted = std::future::poll_fn(|cx| self.send.poll_capacity(cx))
                .await
                .ok_or("stream closed")??;
            let n = granted.min(frame.len());
            if n > 0 {
                self.send.send_data(frame.split_to(n), false)?;
            }
        }
        Ok(())
    }

    /// Reads until one whole frame is buffered; returns its payload length.
    async fn read_frame(&mut self) -> Result<usize, Error> {
        loop {
            if let Some(header) = ws::parse_header(&self.buf, 64 << 20).map_err(|e| format!("{e:?}"))? {
                if self.buf.len() >= header.frame_len() {
                    self.buf.advance(header.frame_len());
                    return Ok(header.payload_len);
                }
            }
            let data = self.recv.data().await.ok_or("stream ended")??;
            let _ = self.recv.flow_control().release_capacity(data.len());
            self.buf.extend_from_slice(&data);
        }
    }
}

fn masked_frame(rng: &mut XorShift, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 14);
    ws::write_frame(&mut out, true, OP_BINARY, Some(rng.mask_key()), payload);
    Bytes::from(out)
}

async fn echo(
    client: &h2::client::SendRequest<Bytes>,
    args: &Args,
    streams: usize,
    size: usize,
    duration: f64,
) -> Result<serde_json::Value, Error> {
    let mut sockets = Vec::with_capacity(streams);
    for _ in 0..streams {
        sockets.push(open(client, &args.path).await?);
    }
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3)?));
    let stop = Arc::new(AtomicBool::new(false));
    let payload = vec![0x5au8; size];
    let mut tasks = Vec::new();
    for (i, mut socket) in sockets.into_iter().enumerate() {
        let (histogram, stop, payload) = (histogram.clone(), stop.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = XorShift::from_time(i as u64);
            let mut local = Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3).expect("bounds");
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                socket.send_frame(masked_frame(&mut rng, &payload)).await?;
                let echoed = socket.read_frame().await?;
                if echoed != payload.len() {
                    return Err::<(), Error>(format!("echo of {echoed} bytes, sent {}", payload.len()).into());
                }
                let _ = local.record(started.elapsed().as_nanos().max(1) as u64);
            }
            histogram
                .lock()
                .expect("histogram")
                .add(&local)
                .map_err(|e| format!("{e:?}"))?;
            Ok(())
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(duration)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let histogram = histogram.lock().expect("histogram");
    let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(serde_json::json!({
        "mode": "h2-echo",
        "target": args.target,
        "workers": 1,
        "ok": true,
        "rate": histogram.len() as f64 / elapsed,
        "streams": streams,
        "size": size,
        "messages_per_s": histogram.len() as f64 / elapsed,
        "p50_us": us(0.5),
        "p99_us": us(0.99),
    }))
}

async fn idle(
    client: &h2::client::SendRequest<Bytes>,
    args: &Args,
    streams: usize,
    hold: f64,
    pid: u32,
) -> Result<serde_json::Value, Error> {
    let before = rss_kib(pid).ok_or("cannot read the proxy's VmRSS")?;
    let kernel_before = KernelMem::read();
    let mut sockets = Vec::with_capacity(streams);
    for _ in 0..streams {
        sockets.push(open(client, &args.path).await?);
    }
    tokio::time::sleep(Duration::from_secs_f64(hold)).await;
    let after = rss_kib(pid).ok_or("cannot read the proxy's VmRSS")?;
    // The proxy's upstream sockets and the echo servers' (one pair per
    // WebSocket) and the one h2 connection: the report subtracts half the
    // `direct` figure (the echo server's side) to get the proxy's share.
    let kernel = KernelMem::read().per_conn_since(&kernel_before, streams as u64);
    // Still open: every stream answers an echo.
    let mut rng = XorShift::from_time(0);
    for socket in sockets.iter_mut().take(10) {
        socket.send_frame(masked_frame(&mut rng, b"still there")).await?;
        socket.read_frame().await?;
    }
    let mut result = serde_json::json!({
        "mode": "h2-idle",
        "target": args.target,
        "workers": 1,
        "ok": true,
        "opened": streams,
        "streams": streams,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_websocket": after.saturating_sub(before) as f64 / streams as f64,
    });
    if let Some(fields) = result.as_object_mut() {
        fields.extend(kernel);
    }
    Ok(result)
}
