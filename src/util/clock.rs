//! The two clocks tether reads: a monotonic one on tokio's clock (so tests
//! on a paused clock drive it) and the wall clock (for "since when" shown to
//! operators and compared across the hosts of a cluster).

use std::sync::OnceLock;

use tokio::time::Instant;

/// Milliseconds since a process-wide origin, on tokio's clock. Monotonic,
/// and driven by `tokio::time::pause`/`advance` in tests.
pub fn monotonic_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Milliseconds since the Unix epoch, on the wall clock (0 if the clock is
/// set before 1970).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_monotonic_clock_follows_tokios_paused_clock() {
        let start = monotonic_ms();
        tokio::time::advance(std::time::Duration::from_millis(1500)).await;
        assert_eq!(monotonic_ms() - start, 1500);
    }

    #[test]
    fn the_wall_clock_is_after_2020() {
        assert!(unix_ms() > 1_577_836_800_000);
    }
}
