//! `bench-relay`: a plain TCP relay with an epoll (tokio) and an io_uring
//! engine, to measure the kernel work per relayed message of each (issue 19).
//! Run by `bench/uring.sh`.

use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use tether_bench::relay::{self, Upstreams};

/// Relays every accepted TCP connection to the next upstream (round robin),
/// both ways, until both directions have ended (half-close passed on).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (loopback only); port 0 picks a free port. The
    /// address bound is printed on stderr as `listening on ADDR`.
    #[arg(long)]
    listen: SocketAddr,
    /// An upstream address (repeat for several; used in turn).
    #[arg(long = "upstream", required_unless_present = "probe")]
    upstreams: Vec<SocketAddr>,
    /// The data path.
    #[arg(long, value_enum, default_value_t = Engine::Epoll)]
    engine: Engine,
    /// How the uring engine receives.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    #[arg(long, value_enum, default_value_t = UringRecv::Multishot)]
    uring_recv: UringRecv,
    /// Buffers of 16 KiB in the uring engine's provided buffer ring (a power of two).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    #[arg(long, default_value_t = 1024)]
    uring_buffers: u16,
    /// Print what the kernel offers (io_uring, multishot receive, buffer rings) and exit.
    #[arg(long)]
    probe: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Engine {
    /// tokio current-thread runtime (epoll), one task per connection pair.
    Epoll,
    /// io_uring on one thread (Linux only).
    Uring,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum UringRecv {
    /// Multishot receive into a provided buffer ring.
    Multishot,
    /// One receive at a time into each direction's own buffer.
    Single,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.probe {
        return probe();
    }
    if !args.listen.ip().is_loopback() {
        eprintln!("refusing to listen on {}: loopback addresses only", args.listen);
        return ExitCode::FAILURE;
    }
    let Some(upstreams) = Upstreams::new(args.upstreams.clone()) else {
        eprintln!("at least one --upstream is needed");
        return ExitCode::FAILURE;
    };
    let listener = match TcpListener::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => eprintln!("listening on {addr} ({:?} engine)", args.engine),
        Err(e) => {
            eprintln!("cannot read the bound address: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = match args.engine {
        Engine::Epoll => relay::epoll::run(listener, upstreams),
        Engine::Uring => run_uring(listener, upstreams, &args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay stopped: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(target_os = "linux")]
fn run_uring(listener: TcpListener, upstreams: Upstreams, args: &Args) -> std::io::Result<()> {
    use relay::uring::{RecvMode, Settings};
    let settings = Settings {
        recv: match args.uring_recv {
            UringRecv::Multishot => RecvMode::Multishot,
            UringRecv::Single => RecvMode::Single,
        },
        buffers: args.uring_buffers,
        ring_entries: 4096,
    };
    relay::uring::run(listener, upstreams, settings)
}

#[cfg(not(target_os = "linux"))]
fn run_uring(_: TcpListener, _: Upstreams, _: &Args) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "the uring engine needs Linux",
    ))
}

#[cfg(target_os = "linux")]
fn probe() -> ExitCode {
    match relay::uring::probe() {
        Ok(facts) => {
            println!("{facts}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("io_uring unavailable: {e} (errno {:?})", e.raw_os_error());
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn probe() -> ExitCode {
    println!("io_uring unavailable: not Linux");
    ExitCode::FAILURE
}
