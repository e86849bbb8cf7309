//! Waiting for something to happen.

use std::time::Duration;

use tokio::time::Instant;

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(5);

/// Polls `check` until it holds or `within` passes; returns how long it took
/// (`None`: it never held). `.expect("what")` it where a test must not go on without it.
///
/// On tokio's clock, so under a paused clock the polling advances virtual time.
pub async fn eventually(within: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() >= within {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}
