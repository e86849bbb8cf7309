//! `bench-load`: the load generator of the tether benchmark. Each run prints
//! one JSON line; `bench-load report` turns collected lines into the table.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use tether_bench::load::{self, ConnectParams, EchoParams, HttpParams, IdleParams, Target};

/// Load generator for WebSocket proxies: echo throughput, handshake rate,
/// idle connection capacity and keep-alive HTTP.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Runtime threads (1: a current-thread runtime, best when pinned to one core).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// Hard limit on the whole run in seconds; past it the run is reported as failed.
    #[arg(long, global = true, default_value_t = 900.0)]
    max_seconds: f64,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// C connections send S-byte messages and await each echo for D seconds.
    Echo {
        #[command(flatten)]
        common: Common,
        /// Concurrent connections.
        #[arg(long, short = 'c', default_value_t = 50)]
        connections: usize,
        /// Message size in bytes.
        #[arg(long, short = 's', default_value_t = 64)]
        size: usize,
        /// Measured seconds.
        #[arg(long, short = 'd', default_value_t = 5.0)]
        duration: f64,
        /// Seconds of load before measuring.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Process (the proxy) whose CPU time is read over the measured window
        /// (repeatable; summed) → `proxy_cpu_us_per_op`.
        #[arg(long = "cpu-pid")]
        cpu_pids: Vec<u32>,
    },
    /// N handshakes (connect, upgrade, one message, close), C at a time.
    Connect {
        #[command(flatten)]
        common: Common,
        /// Handshakes in total.
        #[arg(long, short = 'n', default_value_t = 2000)]
        count: usize,
        /// Handshakes in flight at once.
        #[arg(long, short = 'c', default_value_t = 50)]
        concurrency: usize,
        /// Size of the one message per connection.
        #[arg(long, short = 's', default_value_t = 64)]
        size: usize,
        /// Process (the proxy) whose CPU time is read over the measured window
        /// (repeatable; summed) → `proxy_cpu_us_per_op`.
        #[arg(long = "cpu-pid")]
        cpu_pids: Vec<u32>,
    },
    /// Open N WebSockets, hold them T seconds with occasional pings, count survivors.
    Idle {
        #[command(flatten)]
        common: Common,
        /// Connections to open and hold.
        #[arg(long, short = 'n', default_value_t = 9000)]
        count: usize,
        /// Seconds to hold them once all are open.
        #[arg(long, default_value_t = 60.0)]
        hold: f64,
        /// Seconds between the pings of one connection.
        #[arg(long, default_value_t = 10.0)]
        ping_interval: f64,
        /// Handshakes in flight while opening.
        #[arg(long, default_value_t = 200)]
        open_concurrency: usize,
        /// Source addresses 127.0.0.1..=127.0.0.K (0: as many as the local port range needs).
        #[arg(long, default_value_t = 0)]
        sources: usize,
        /// File written once every connection has been attempted (the "all open" signal).
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Process whose RSS is read before, when all are open and at the end (repeatable; summed).
        #[arg(long = "rss-pid")]
        rss_pids: Vec<u32>,
    },
    /// C keep-alive connections send GETs for D seconds.
    Http {
        #[command(flatten)]
        common: Common,
        /// Concurrent connections.
        #[arg(long, short = 'c', default_value_t = 50)]
        connections: usize,
        /// Measured seconds.
        #[arg(long, short = 'd', default_value_t = 5.0)]
        duration: f64,
        /// Seconds of load before measuring.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Process (the proxy) whose CPU time is read over the measured window
        /// (repeatable; summed) → `proxy_cpu_us_per_op`.
        #[arg(long = "cpu-pid")]
        cpu_pids: Vec<u32>,
    },
    /// Prints the markdown table of a file of result lines.
    Report {
        /// File with one JSON result per line.
        results: PathBuf,
    },
}

/// Where the load goes and how the result line is labelled.
#[derive(Debug, Args)]
struct Common {
    /// Address of the proxy frontend or echo server (loopback only).
    #[arg(long)]
    addr: SocketAddr,
    /// Request path.
    #[arg(long, default_value = "/ws")]
    path: String,
    /// Target label in the result line (direct, tether, haproxy, nginx).
    #[arg(long, default_value = "direct")]
    target: String,
    /// Worker threads of the target, for the result line (0 for direct).
    #[arg(long, default_value_t = 0)]
    workers: u64,
    /// Round number, for the result line.
    #[arg(long, default_value_t = 0)]
    round: u64,
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::from_secs(3600))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let common = match &cli.mode {
        Mode::Report { results } => return report(results),
        Mode::Echo { common, .. }
        | Mode::Connect { common, .. }
        | Mode::Idle { common, .. }
        | Mode::Http { common, .. } => common,
    };
    if let Err(e) = tether_bench::client::check_loopback(&common.addr) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let target = Target {
        addr: common.addr,
        path: common.path.clone(),
    };
    let rt = match tether_bench::runtime(cli.threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mode_name = match &cli.mode {
        Mode::Echo { .. } => "echo",
        Mode::Connect { .. } => "connect",
        Mode::Idle { .. } => "idle",
        Mode::Http { .. } => "http",
        Mode::Report { .. } => "report",
    };
    let run = async {
        match &cli.mode {
            Mode::Echo {
                connections,
                size,
                duration,
                warmup,
                cpu_pids,
                ..
            } => {
                let p = EchoParams {
                    connections: *connections,
                    size: *size,
                    duration: secs(*duration),
                    warmup: secs(*warmup),
                    cpu_pids: cpu_pids.clone(),
                };
                load::echo(&target, &p).await
            }
            Mode::Connect {
                count,
                concurrency,
                size,
                cpu_pids,
                ..
            } => {
                let p = ConnectParams {
                    count: *count,
                    concurrency: (*concurrency).max(1),
                    size: *size,
                    cpu_pids: cpu_pids.clone(),
                };
                load::connect(&target, &p).await
            }
            Mode::Idle {
                count,
                hold,
                ping_interval,
                open_concurrency,
                sources,
                ready_file,
                rss_pids,
                ..
            } => {
                let p = IdleParams {
                    count: *count,
                    hold: secs(*hold),
                    ping_interval: secs(*ping_interval),
                    open_concurrency: *open_concurrency,
                    sources: *sources,
                    ready_file: ready_file.clone(),
                    rss_pids: rss_pids.clone(),
                };
                load::idle(&target, &p).await
            }
            Mode::Http {
                connections,
                duration,
                warmup,
                cpu_pids,
                ..
            } => {
                let p = HttpParams {
                    connections: *connections,
                    duration: secs(*duration),
                    warmup: secs(*warmup),
                    cpu_pids: cpu_pids.clone(),
                };
                load::http(&target, &p).await
            }
            Mode::Report { .. } => Value::Null,
        }
    };
    let mut result = rt.block_on(async {
        match tokio::time::timeout(secs(cli.max_seconds), run).await {
            Ok(v) => v,
            Err(_) => json!({ "mode": mode_name, "ok": false, "first_error": format!("run exceeded --max-seconds {}", cli.max_seconds) }),
        }
    });
    // Connections still being torn down must not delay the exit.
    rt.shutdown_timeout(Duration::from_millis(100));
    if let Value::Object(map) = &mut result {
        map.insert("target".into(), json!(common.target));
        map.insert("workers".into(), json!(common.workers));
        map.insert("round".into(), json!(common.round));
        map.insert("addr".into(), json!(common.addr.to_string()));
    }
    println!("{result}");
    if result.get("ok").and_then(Value::as_bool).unwrap_or(false) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn report(path: &PathBuf) -> ExitCode {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot read {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let mut records = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(v) => records.push(v),
            Err(e) => eprintln!("{}:{}: skipped, not JSON: {e}", path.display(), i + 1),
        }
    }
    print!("{}", tether_bench::report::render(&records));
    ExitCode::SUCCESS
}
