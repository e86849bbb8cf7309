//! Benchmark harness for tether: a WebSocket echo server and a load
//! generator, used by `bench/run.sh` to compare tether with a direct
//! connection, HAProxy and NGINX under the same load on the same machine.
//!
//! Everything here talks to loopback addresses only.

pub mod client;
pub mod cpu;
pub mod kmem;
pub mod load;
pub mod relay;
pub mod report;
pub mod server;
pub mod soak;
pub mod ws;

/// Builds the tokio runtime: a current-thread runtime for one thread (the
/// cheapest, and what a process pinned to one core can use), a multi-thread
/// runtime otherwise.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}
