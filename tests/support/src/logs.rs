//! Logs: tether's logs under `--nocapture`, and a writer that captures them for assertions.

use std::sync::{Arc, Mutex};

/// Runs `test` with logs from tether visible under `--nocapture` (TETHER_LOG=debug).
pub fn init_logs() {
    let filter = std::env::var("TETHER_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Every `info` (and above) log line of this test binary, captured from
/// the first call on (tests tell theirs apart by what the lines name).
pub fn captured_logs() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let _ = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_env_filter("info")
            .try_init();
        captured
    })
}

/// The access-log lines of this test binary as JSON objects: from the first
/// call on, every tether started in this process whose config names no
/// `[log] access` writes its lines here, in JSON unless its `log_format`
/// says otherwise (see [`Captured::lines`]).
pub fn captured_access_lines() -> &'static Captured {
    static LINES: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LINES.get_or_init(|| {
        let mut chosen = ACCESS_DEFAULTS.lock().unwrap();
        *chosen = AccessDefaults::Captured;
        let captured = Captured::default();
        let writer = captured.clone();
        tether::access_log::set_defaults(tether::access_log::Defaults {
            format: tether::access_log::Format::Json,
            target: Some(tether::access_log::Target::Function(Arc::new(move |bytes: &[u8]| {
                writer.0.lock().unwrap().extend_from_slice(bytes)
            }))),
            silenced: false,
        });
        captured
    })
}

/// What this test binary's tethers do with access lines of configs that name
/// no `[log] access` (one lock, so a capture asked for by one test is never
/// undone by another test starting its tether at the same moment).
static ACCESS_DEFAULTS: Mutex<AccessDefaults> = Mutex::new(AccessDefaults::Unset);

enum AccessDefaults {
    Unset,
    Quiet,
    Captured,
}

/// Tethers started by the helpers write no access lines (as when the lines
/// went through `tracing` with no subscriber), unless a test captures them
/// ([`captured_access_lines`]) or `TETHER_LOG` is set (then they go to
/// stderr, to be seen under `--nocapture`).
pub fn quiet_access_log_unless_captured() {
    let mut chosen = ACCESS_DEFAULTS.lock().unwrap();
    if matches!(*chosen, AccessDefaults::Unset) {
        *chosen = AccessDefaults::Quiet;
        let seen = std::env::var_os("TETHER_LOG").is_some();
        tether::access_log::set_defaults(tether::access_log::Defaults {
            target: seen.then_some(tether::access_log::Target::Stderr),
            ..Default::default()
        });
    }
}

/// Collects every log line written (give it to a `tracing_subscriber` as its writer).
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Runs `f` with every log line of this thread captured; returns what
    /// `f` returned and the captured text.
    pub fn during<T>(f: impl FnOnce() -> T) -> (T, String) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let result = {
            let _this_thread = tracing_subscriber::util::SubscriberInitExt::set_default(subscriber);
            f()
        };
        (result, captured.text())
    }

    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }

    /// The lines written so far that are JSON objects.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}
