//! Headless Chromium (Debian package `chromium`) for the tests that need a
//! real browser: the stats page, WebSockets over HTTP/2.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// A server of one HTML page (any request, `Connection: close`).
pub async fn page_server(html: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read_exact(&mut byte).await.is_ok() {
                    head.push(byte[0]);
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// Loads `url` (an https:// URL on `tether.test`, which it maps to
/// 127.0.0.1, accepting the test's self-signed certificate) in headless
/// Chromium driven by `tests/browser/page_out.mjs`, waits for the page to
/// write its result into `#out`, and returns the script's report (`out`, `error`).
pub async fn browser_page_out(binary: &std::path::Path, url: &str) -> serde_json::Value {
    let harness = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../browser");
    crate::ensure_npm_packages(&harness, &["playwright-core"]);
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("node")
            .arg(harness.join("page_out.mjs"))
            .arg(url)
            .arg("tether.test")
            .env("CHROMIUM", binary)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser script finished in time")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "browser report {line:?}: {e}; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}
