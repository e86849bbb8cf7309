//! Headless Chromium (Debian package `chromium`) driven by the Node scripts of
//! `tests/browser` (playwright-core): the stats page and demo page tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::node::ensure_npm_packages;

/// The Chromium binary: `$CHROMIUM`, else the Debian package's.
pub fn chromium() -> Result<PathBuf, String> {
    let path = std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found (install it with `apt-get install -y chromium`, or set CHROMIUM)",
            path.display()
        ))
    }
}

/// The Chromium binary, or `None` after printing why the calling test is
/// skipped. With `TETHER_REQUIRE_BROWSER` set (CI), a missing browser panics
/// instead, so a browser test is never skipped there.
pub fn chromium_or_skip() -> Option<PathBuf> {
    match chromium() {
        Ok(binary) => Some(binary),
        Err(reason) if std::env::var_os("TETHER_REQUIRE_BROWSER").is_none() => {
            println!("SKIPPED browser test: {reason}");
            eprintln!("SKIPPED browser test: {reason}");
            None
        }
        Err(reason) => panic!("TETHER_REQUIRE_BROWSER is set but {reason}"),
    }
}

/// The directory of the browser scripts.
pub fn browser_scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../browser")
}

/// Runs `node tests/browser/<script> <args>` with `chromium` (installing
/// playwright-core first if needed) and returns the JSON report it prints
/// as its last line. Panics, with the script's stderr, when it prints none
/// or takes over `limit`.
pub async fn run_browser_script(script: &str, args: &[String], chromium: &Path, limit: Duration) -> serde_json::Value {
    let harness = browser_scripts();
    ensure_npm_packages(&harness, &["playwright-core"]);
    let output = tokio::time::timeout(
        limit,
        tokio::process::Command::new("node")
            .arg(harness.join(script))
            .args(args)
            .env("CHROMIUM", chromium)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{script} took over {limit:?}"))
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "{script}: no JSON report ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}
