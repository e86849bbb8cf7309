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

/// A moment on the process's monotonic clock in 8 bytes (a `std::time::Instant`
/// takes 16): microseconds since a process-wide origin. For what each open
/// tunnel carries, where every byte counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Moment(u64);

impl Moment {
    /// Now.
    pub fn now() -> Moment {
        static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
        let origin = *ORIGIN.get_or_init(std::time::Instant::now);
        Moment(origin.elapsed().as_micros().try_into().unwrap_or(u64::MAX))
    }

    /// The time since this moment.
    pub fn elapsed(self) -> std::time::Duration {
        std::time::Duration::from_micros(Moment::now().0.saturating_sub(self.0))
    }
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
    fn a_moment_measures_the_time_since() {
        let start = Moment::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let elapsed = start.elapsed();
        assert!(elapsed >= std::time::Duration::from_millis(20) && elapsed < std::time::Duration::from_secs(5));
        assert_eq!(std::mem::size_of::<Moment>(), 8);
    }

    #[test]
    fn the_wall_clock_is_after_2020() {
        assert!(unix_ms() > 1_577_836_800_000);
    }
}
