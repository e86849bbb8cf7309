//! `bench-echo-server`: the WebSocket echo server behind every benchmark target.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tether_bench::server::{serve, ServerConfig};

/// A fast WebSocket echo server: answers the handshake on any path and echoes
/// every message; answers plain HTTP GETs with 200 and a small body.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (loopback only).
    #[arg(long)]
    listen: SocketAddr,
    /// Name announced in the `X-Echo-Server` header and the HTTP body.
    #[arg(long, default_value = "echo")]
    name: String,
    /// Runtime threads (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Largest message payload accepted, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_message: usize,
    /// Set SO_REUSEPORT: several servers then share one address and the
    /// kernel spreads the connections over them (past one process's
    /// `ulimit -n`).
    #[arg(long)]
    reuseport: bool,
    /// The server stops by itself after this many seconds (or on SIGINT/SIGTERM).
    #[arg(long, default_value_t = 4 * 3600)]
    max_lifetime: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        eprintln!("refusing to listen on {}: loopback addresses only", args.listen);
        return ExitCode::FAILURE;
    }
    let rt = match tether_bench::runtime(args.threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let listener = match listen(args.listen, args.reuseport) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        eprintln!("{} listening on {}", args.name, args.listen);
        let config = ServerConfig {
            name: Arc::from(args.name.as_str()),
            max_message: args.max_message,
        };
        let lifetime = Duration::from_secs(args.max_lifetime);
        serve(listener, config, stop(lifetime)).await;
        ExitCode::SUCCESS
    })
}

/// Binds with a deep accept queue: the load generator opens hundreds of
/// connections at once, and an overflowing queue would cost a 1 s SYN
/// retransmission that measures the queue, not the proxy.
fn listen(addr: SocketAddr, reuseport: bool) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuseport {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Completes on SIGINT, SIGTERM or when the lifetime is over.
async fn stop(lifetime: Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return tokio::time::sleep(lifetime).await,
    };
    tokio::select! {
        _ = tokio::time::sleep(lifetime) => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
