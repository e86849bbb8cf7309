//! Headless Chromium (Debian package `chromium`) for the tests that need a
//! real browser: the stats page, WebSockets over HTTP/2.

use std::time::Duration;

/// The Chromium binary: `$CHROMIUM`, else the Debian package's.
pub fn chromium() -> Result<std::path::PathBuf, String> {
    let path = std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), std::path::PathBuf::from);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found (install it with `apt-get install -y chromium`, or set CHROMIUM)",
            path.display()
        ))
    }
}

/// Runs headless Chromium on `url` with `extra` arguments; returns its stdout.
pub async fn run_chromium(binary: &std::path::Path, profile: &std::path::Path, extra: &[String], url: &str) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                // Lets the page's polls and timers run before the DOM is dumped.
                "--virtual-time-budget=6000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium took over 60 s")
    .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The Chromium binary, or `None` after printing why the test is skipped:
/// only when none is found and TETHER_REQUIRE_BROWSER (set in CI) is not set.
pub fn chromium_or_skip() -> Option<std::path::PathBuf> {
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
