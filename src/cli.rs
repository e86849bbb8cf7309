//! Commands (`run`, `check`, `demo`, `import`, …), logging set-up, the runtime, and signals.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tether::config;
use tether::workers::WorkerThreads;
use tether::Tether;

#[derive(Parser)]
#[command(name = "tether", version, about = "A load balancer for WebSocket traffic")]
struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The configurations `tether import` reads.
#[derive(Clone, Copy, ValueEnum)]
enum ImportFrom {
    /// An HAProxy configuration (`haproxy.cfg`).
    Haproxy,
    /// An NGINX configuration (`nginx.conf`).
    Nginx,
}

#[derive(Subcommand)]
enum Command {
    /// Run the balancer with a configuration file.
    Run {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file: exit 0 if valid, 1 with the error if not.
    Check {
        /// The TOML configuration file.
        file: PathBuf,
    },
    /// Run one WebSocket echo server (announces its name, echoes every message) to try tether against.
    Echo {
        /// Where it listens.
        #[arg(long, default_value = "127.0.0.1:8201")]
        listen: SocketAddr,
        /// The name it announces.
        #[arg(long, default_value = "echo")]
        name: String,
    },
    /// Read a password from standard input and print its argon2id hash for `[admin] users`.
    HashPassword,
    /// Translate an HAProxy or NGINX configuration into tether's TOML, printed on standard
    /// output: exit 0 when everything was translated, 2 when something was not (each such
    /// directive is a `# not translated:` comment and a warning), 1 when the file cannot be read.
    Import {
        /// The kind of file.
        #[arg(value_enum)]
        from: ImportFrom,
        /// The `haproxy.cfg` or `nginx.conf`.
        file: PathBuf,
    },
    /// Start demo WebSocket echo servers behind tether with simulated users, and a page to watch and act on them.
    Demo {
        /// Where the demo balancer listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where tether's admin listener (stats page, API) listens.
        #[arg(long, default_value = "127.0.0.1:9000")]
        admin: SocketAddr,
        /// Where the demo page (live picture and buttons) listens.
        #[arg(long, default_value = "127.0.0.1:8090")]
        page: SocketAddr,
        /// How many simulated users connect through tether.
        #[arg(long, default_value_t = 90)]
        users: usize,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's simulated users would fill the terminal with access-log lines.
    let default_filter = match cli.command {
        Command::Demo { .. } => "info,tether::access=warn",
        _ => "info",
    };
    init_logging(cli.log_format, default_filter);
    // The access log is written without tracing: its defaults come from the
    // command line, and `TETHER_LOG` silences it, evaluated once here.
    tether::access_log::set_defaults(tether::access_log::Defaults {
        format: match cli.log_format {
            LogFormat::Text => tether::access_log::Format::Text,
            LogFormat::Json => tether::access_log::Format::Json,
        },
        target: Some(tether::access_log::Target::Stderr),
        silenced: !tracing::enabled!(target: "tether::access", tracing::Level::INFO),
    });
    if let Command::Import { from, file } = &cli.command {
        return import(*from, file);
    }
    let result = match cli.command {
        Command::Check { file } => check(&file),
        Command::Run { config } => run(&config),
        Command::Demo {
            listen,
            admin,
            page,
            users,
        } => demo(listen, admin, page, users),
        Command::Echo { listen, name } => echo(listen, name),
        Command::HashPassword => hash_password(),
        Command::Import { .. } => Ok(()),
    };
    // Lines still in buffers reach their destination before the process ends.
    tether::access_log::flush_all(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: library errors
/// that already name their cause in their own message (`cannot listen on
/// …: Address already in use`) are not followed by that cause again.
fn error_chain(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Colour in log lines only on a terminal, and never with `NO_COLOR` set
/// (<https://no-color.org>): escape codes are noise in a file or a pipe.
fn log_colour() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(log_colour())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Reads one line (the password) from standard input and prints its hash.
fn hash_password() -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("password (it is shown as you type; or pipe it in):");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    let hash = tether::admin::auth::hash_password(password)?;
    println!("{hash}");
    Ok(())
}

/// `import`: the TOML on stdout, a warning on stderr per directive not translated.
fn import(from: ImportFrom, file: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("error: cannot read {}: {err}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let name = file.display().to_string();
    let translated = match from {
        ImportFrom::Haproxy => tether::import::haproxy(&text, &name),
        ImportFrom::Nginx => tether::import::nginx(&text, &name),
    };
    match translated {
        Ok(translation) => {
            print!("{}", translation.toml);
            for u in &translation.untranslated {
                eprintln!(
                    "warning: {name}:{}: not translated: {} ({})",
                    u.line, u.directive, u.reason
                );
            }
            if translation.untranslated.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "warning: {} directive(s) not translated; see the `# not translated:` comments",
                    translation.untranslated.len()
                );
                ExitCode::from(2)
            }
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn check(file: &Path) -> anyhow::Result<()> {
    let config = config::load_file(file)?;
    println!(
        "{}: valid ({} frontend(s), {} backend(s), {} server(s))",
        file.display(),
        config.frontends.len(),
        config.backends.len(),
        config.backends.iter().map(|b| b.servers.len()).sum::<usize>()
    );
    Ok(())
}

/// Which tokio scheduler a command runs on.
#[derive(Clone, Copy)]
enum Scheduler {
    /// Everything on the calling thread (`run`'s worker 0, `echo`).
    OneThread,
    /// tokio's work-stealing scheduler over every core (`demo`).
    WorkStealing,
}

/// A runtime with timers and I/O enabled, on `scheduler`.
fn runtime(scheduler: Scheduler) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match scheduler {
        Scheduler::OneThread => tokio::runtime::Builder::new_current_thread(),
        Scheduler::WorkStealing => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build().context("cannot start the runtime")
}

/// `run`: `workers` single-threaded runtimes (default one per core), the
/// main thread's being worker 0, each accepting on its own socket of every
/// address (see `tether::workers`: measured faster per message in `bench/`
/// than tokio's work-stealing scheduler, which wakes threads across cores).
fn run(path: &Path) -> anyhow::Result<()> {
    let config = config::load_file(path)?;
    let workers = config
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let worker_threads = WorkerThreads::start(workers.saturating_sub(1))?;
    let served = runtime(Scheduler::OneThread)?.block_on(async {
        let tether = Tether::bind_on(&config, worker_threads.runtimes())?;
        for frontend in &config.frontends {
            tracing::info!(frontend = %frontend.name, addresses = ?tether.local_addrs(&frontend.name), "listening");
        }
        let handle = tether.handle();
        handle.set_config_path(path.to_path_buf());
        let reopen = handle.clone();
        tokio::spawn(async move { reload_on_hangup(handle).await });
        tokio::spawn(async move { reopen_logs_on_usr1(reopen).await });
        tether.run(stop_signal()).await;
        Ok(())
    });
    worker_threads.stop();
    served
}

fn demo(listen: SocketAddr, admin: SocketAddr, page: SocketAddr, users: usize) -> anyhow::Result<()> {
    runtime(Scheduler::WorkStealing)?.block_on(async {
        let mut options = tether::demo::DemoOptions::new(listen, admin, page);
        options.users.count = users;
        let demo = tether::demo::Demo::prepare(options).await?;
        println!(
            "\ntether demo is running: {users} simulated users over three echo servers ({}).\n\n  \
             Open http://{page}/ in a browser: connections per server, live, with buttons to add a\n  \
             server, kill one, drain one and bring it back. Watch the users fail over and spread.\n\n  \
             tether's stats page and API: http://{admin}/   your own WebSocket: http://{front}/\n\n  \
             Ctrl-C stops it.\n",
            tether::demo::SERVER_NAMES.join(", "),
            page = demo.page(),
            admin = demo.admin(),
            front = demo.frontend(),
        );
        demo.run(stop_signal()).await;
        Ok(())
    })
}

fn echo(listen: SocketAddr, name: String) -> anyhow::Result<()> {
    runtime(Scheduler::OneThread)?.block_on(async {
        // Lives as long as the process: leaking the name gives the server its `'static` str.
        let name: &'static str = Box::leak(name.into_boxed_str());
        let address = tether::demo::start_echo_server_on(listen, name).await?;
        println!("LISTENING {address}");
        stop_signal().await;
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Reopens the access log's file on SIGUSR1 (log rotation without a reload, as NGINX does).
async fn reopen_logs_on_usr1(handle: tether::Handle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
            return;
        };
        while usr1.recv().await.is_some() {
            handle.reopen_access_log();
            tracing::info!("access log reopened");
        }
    }
    #[cfg(not(unix))]
    {
        let _ = handle;
    }
}

/// Reloads the configuration on SIGHUP; a bad file is logged and the old one kept.
async fn reload_on_hangup(handle: tether::Handle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangup.recv().await.is_some() {
            // Logs and counts the outcome (`tether_config_reloads_total`); a bad file keeps the old config.
            let _ = handle.reload_config_file();
        }
    }
    #[cfg(not(unix))]
    {
        let _ = handle;
    }
}
