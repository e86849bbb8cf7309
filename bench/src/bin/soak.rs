//! `soak`: the "nothing is lost" run. Drives the real release tether binary on
//! 127.0.0.1 through reloads, a killed server, a Redis restart and a slowloris
//! attack under steady checked WebSocket traffic; prints one table per phase
//! with PASS/FAIL and exits non-zero on any FAIL. See bench/README.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tether_bench::soak::phases::{self, Settings};
use tether_bench::soak::procs::{which, Bins};

/// Soak run of tether: reloads, a killed server, Redis restarts and slowloris
/// under steady WebSocket traffic, every message numbered and checked.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Smoke run: 200 sockets, 20 reloads, 300 slowloris connections, shorter waits (about 2 minutes).
    #[arg(long)]
    quick: bool,
    /// Phases to run, comma separated: reload, kill, redis, slowloris.
    #[arg(long, default_value = "reload,kill,redis,slowloris", value_delimiter = ',')]
    phases: Vec<String>,
    /// WebSockets held during the reload, kill and Redis phases [default: 2000, quick 200].
    #[arg(long)]
    sockets: Option<usize>,
    /// Reloads in the reload phase [default: 100, quick 20].
    #[arg(long)]
    reloads: Option<usize>,
    /// Milliseconds between reloads [default: 1500, quick 1000].
    #[arg(long)]
    reload_interval_ms: Option<u64>,
    /// Each client sends a message this often, in milliseconds.
    #[arg(long, default_value_t = 500)]
    message_interval_ms: u64,
    /// Slowloris connections [default: 2000, quick 300].
    #[arg(long)]
    slowloris: Option<usize>,
    /// Seconds of each probe measurement in the slowloris phase [default: 10, quick 4].
    #[arg(long)]
    probe_seconds: Option<u64>,
    /// How much the attacked p99 may exceed the unattacked one, in ms.
    #[arg(long, default_value_t = 5.0)]
    slack_ms: f64,
    /// The tether binary [default: $BENCH_TETHER_BIN, else target/release/tether].
    #[arg(long)]
    tether_bin: Option<PathBuf>,
    /// Directory for configs and logs [default: $BENCH_OUT, else a new /tmp/tether-soak.* directory].
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    raise_nofile();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let tether = args
        .tether_bin
        .clone()
        .or_else(|| std::env::var_os("BENCH_TETHER_BIN").map(PathBuf::from))
        .unwrap_or_else(|| target_dir.join("release/tether"));
    let echo_server = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("bench-echo-server")))
        .unwrap_or_else(|| target_dir.join("release/bench-echo-server"));
    for (what, path) in [("tether", &tether), ("bench-echo-server", &echo_server)] {
        if !path.is_file() {
            eprintln!(
                "soak: no {what} binary at {} (cargo build --release -p tether -p tether-bench, or set BENCH_TETHER_BIN)",
                path.display()
            );
            return ExitCode::from(2);
        }
    }
    let out = match args
        .out
        .clone()
        .or_else(|| std::env::var_os("BENCH_OUT").map(PathBuf::from))
    {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("tether-soak.{}", std::process::id())),
    };
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("soak: cannot create {}: {e}", out.display());
        return ExitCode::from(2);
    }
    let q = args.quick;
    let settings = Settings {
        sockets: args.sockets.unwrap_or(if q { 200 } else { 2000 }),
        reloads: args.reloads.unwrap_or(if q { 20 } else { 100 }),
        reload_interval: Duration::from_millis(args.reload_interval_ms.unwrap_or(if q { 1000 } else { 1500 })),
        message_interval: Duration::from_millis(args.message_interval_ms.max(1)),
        window: 4,
        churn: if q {
            (Duration::from_secs(2), Duration::from_secs(10))
        } else {
            (Duration::from_secs(5), Duration::from_secs(30))
        },
        after_kill: Duration::from_secs(if q { 4 } else { 6 }),
        redis_outage: Duration::from_secs(if q { 3 } else { 5 }),
        slowloris: args.slowloris.unwrap_or(if q { 300 } else { 2000 }),
        slowloris_byte_interval: Duration::from_secs(1),
        probe: Duration::from_secs(args.probe_seconds.unwrap_or(if q { 4 } else { 10 })),
        slack_ms: args.slack_ms,
        out: out.clone(),
        bins: Bins {
            tether: tether.clone(),
            echo_server,
            redis_server: which("redis-server"),
        },
    };
    let rt = match tether_bench::runtime(2) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soak: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    eprintln!(
        "soak: tether {}, work dir {}, phases {}",
        tether.display(),
        out.display(),
        args.phases.join(",")
    );
    let mut reports = Vec::new();
    for phase in &args.phases {
        eprintln!("soak: phase {phase} ...");
        let report = rt.block_on(async {
            match phase.as_str() {
                "reload" => Some(phases::reload(&settings).await),
                "kill" => Some(phases::kill(&settings).await),
                "redis" => Some(phases::redis(&settings).await),
                "slowloris" => Some(phases::slowloris(&settings).await),
                _ => None,
            }
        });
        let Some(report) = report else {
            eprintln!("soak: unknown phase {phase} (reload, kill, redis, slowloris)");
            return ExitCode::from(2);
        };
        eprintln!("soak: phase {phase}: {}", report.verdict());
        println!("{}", report.render());
        reports.push(report);
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| r.verdict() == "FAIL")
        .map(|r| r.name.as_str())
        .collect();
    println!(
        "soak {}: {} in {:.0} s ({} cores){}; logs in {}",
        if failed.is_empty() { "PASS" } else { "FAIL" },
        reports
            .iter()
            .map(|r| format!("{} {}", r.name, r.verdict()))
            .collect::<Vec<_>>()
            .join(", "),
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if q { ", --quick" } else { "" },
        out.display()
    );
    // Runtime tasks still holding sockets are dropped with it.
    drop(rt);
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Raises the soft limit on open files to the hard one: 2,000 WebSockets
/// take 2,000 descriptors here and 4,000 in tether (which inherits it).
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a
    // live, properly sized rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
