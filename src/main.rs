//! The `tether` binary: a thin command-line layer over the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
