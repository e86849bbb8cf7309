//! The `tether` binary: a thin command-line layer over the library.

mod cli;

/// jemalloc rather than glibc's malloc, chosen by measurement (docs/benchmarks.md):
/// glibc's `memalign`, which every tokio task and socket registration goes
/// through (they are 128-byte aligned), costs ~700 instructions a call and
/// leaves holes that idle connections then pin.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
