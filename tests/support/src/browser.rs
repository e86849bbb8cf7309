//! Headless Chromium (Debian package `chromium`) driven by the Node scripts of
//! `tests/browser` (playwright-core): the stats page and demo page tests,
//! WebSockets over HTTP/2.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// Runs headless Chromium on `url` with `extra` arguments; returns its stdout.
pub async fn run_chromium(binary: &Path, profile: &Path, extra: &[String], url: &str) -> String {
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
pub async fn browser_page_out(binary: &Path, url: &str) -> serde_json::Value {
    let args = [url.to_string(), "tether.test".to_string()];
    run_browser_script("page_out.mjs", &args, binary, Duration::from_secs(60)).await
}
