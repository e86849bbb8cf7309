//! The access log: one line per HTTP exchange and per finished WebSocket
//! tunnel, formatted without `tracing` straight into a per-thread buffer and
//! written by a thread of its own, so a slow destination never stalls a
//! worker (lines are dropped and counted instead).
//!
//! `format` is pure (the fields, the template parser, the three line
//! formats), `time` turns the wall clock into text, and `writer` has the
//! side effects (per-thread buffers, the writer thread, the destination).

pub mod format;
pub mod time;
pub mod writer;

use std::sync::{Arc, RwLock};

pub use format::{Field, Format, Kind, Record, Template, TemplateError, FIELDS};
pub use writer::{dropped_total, flush_all, Sink, Target};

use crate::util::lock::read;

/// The tracing target today's access lines were emitted on; the text format
/// still names it, so filters and greps written for it keep working.
pub const TARGET: &str = "tether::access";

/// Where and how the access log writes when the configuration does not say
/// (`[log] access` and `log_format` left out): set once by the binary from
/// its command line and `TETHER_LOG`, or by a test harness.
#[derive(Clone)]
pub struct Defaults {
    /// The format of a config without `log_format` (`--log-format json` makes it JSON).
    pub format: Format,
    /// The destination of a config without `access` (`None`: no lines for it).
    pub target: Option<Target>,
    /// `TETHER_LOG` silences `tether::access` (evaluated once at start): no line is written.
    pub silenced: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            format: Format::Text,
            target: Some(Target::Stderr),
            silenced: false,
        }
    }
}

fn defaults_cell() -> &'static RwLock<Defaults> {
    static DEFAULTS: std::sync::OnceLock<RwLock<Defaults>> = std::sync::OnceLock::new();
    DEFAULTS.get_or_init(|| RwLock::new(Defaults::default()))
}

/// Sets the process-wide defaults (before the first instance starts: an
/// instance reads them when it builds a snapshot, at start and on reload).
pub fn set_defaults(defaults: Defaults) {
    *defaults_cell().write().unwrap_or_else(|p| p.into_inner()) = defaults;
}

/// The process-wide defaults in force.
pub fn defaults() -> Defaults {
    read(defaults_cell()).clone()
}

/// Where the access log goes, as the configuration says (`[log] access`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Standard error (the default).
    Stderr,
    /// Standard output.
    Stdout,
    /// A file, appended to, reopened on reload and on SIGUSR1.
    File(std::path::PathBuf),
    /// No access log.
    Off,
}

/// An instance's access log: the format lines take and the sink they go to
/// (`None`: off). Shared by the snapshot and every request started under it.
#[derive(Debug)]
pub struct Logger {
    /// How each line is written.
    pub format: Format,
    /// Where lines go; `None` when the access log is off.
    pub sink: Option<Arc<Sink>>,
}

impl Logger {
    /// The logger for `format` and `destination` (`None` for either: the
    /// process defaults), reusing `previous`'s sink when it writes to the
    /// same place (so a reload keeps one writer thread and its buffers).
    pub fn resolve(format: Option<&Format>, destination: Option<&Destination>, previous: Option<&Logger>) -> Logger {
        let defaults = defaults();
        let format = format.cloned().unwrap_or(defaults.format);
        let target = match destination {
            _ if defaults.silenced => None,
            None => defaults.target,
            Some(Destination::Off) => None,
            Some(Destination::Stderr) => Some(Target::Stderr),
            Some(Destination::Stdout) => Some(Target::Stdout),
            Some(Destination::File(path)) => Some(Target::File(path.clone())),
        };
        let sink = target.map(|target| match previous.and_then(|p| p.sink.as_ref()) {
            Some(sink) if sink.target().same_as(&target) => sink.clone(),
            _ => Arc::new(Sink::new(target)),
        });
        Logger { format, sink }
    }

    /// Whether lines are written at all (callers skip building a record when not).
    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// Formats `record` into this thread's buffer for the sink.
    pub fn log(&self, record: &Record<'_>) {
        if let Some(sink) = &self.sink {
            sink.write_line(|out| self.format.write(record, std::time::SystemTime::now(), out));
        }
    }

    /// Reopens a file destination (after log rotation); nothing for the others.
    pub fn reopen(&self) {
        if let Some(sink) = &self.sink {
            sink.reopen();
        }
    }
}
